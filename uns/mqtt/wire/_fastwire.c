/* uns.mqtt.wire._fastwire: the MQTT 3.1.1 reader's common case in C (see readers.py).
 *
 * publishes() takes, from one socket read, the run of complete QoS 0 and QoS 1 PUBLISH
 * packets with one- or two-byte remaining lengths and a valid UTF-8 topic, appends each
 * as (topic, payload, qos, retain) and owes a PUBACK for each QoS 1 one -- exactly what
 * PacketReader.feed does for them -- and stops at the first packet that is anything else
 * (incomplete, another type, QoS 2, a longer header, a malformed one, a topic that is not
 * UTF-8): the Python loop then decides that packet as before.  Built against the stable
 * ABI; optional (UNS_NATIVE=0 or no compiler: the Python loop does everything).  The
 * framing (the reading of untrusted bytes) is plain C in mqttrun.h, fuzzed by scripts/fuzz.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mqttrun.h"

#define TOPIC_CACHE_MAX 4096 /* topics kept decoded (a flood of distinct topics stays bounded) */

/* The topic's str: from ``topics`` (raw bytes -> str) or decoded (strict UTF-8), a new
 * reference; NULL without an error when the topic is not UTF-8 (Python decides). */
static PyObject *topic_of(const char *raw, Py_ssize_t len, PyObject *topics) {
    PyObject *key = PyBytes_FromStringAndSize(raw, len);
    if (key == NULL) return NULL;
    PyObject *topic = PyDict_GetItemWithError(topics, key);
    if (topic != NULL) {
        Py_INCREF(topic);
        Py_DECREF(key);
        return topic;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    topic = PyUnicode_DecodeUTF8(raw, len, "strict");
    if (topic == NULL) {
        Py_DECREF(key);
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
        return NULL;
    }
    if (PyDict_Size(topics) < TOPIC_CACHE_MAX && PyDict_SetItem(topics, key, topic) < 0) {
        Py_DECREF(key);
        Py_DECREF(topic);
        return NULL;
    }
    Py_DECREF(key);
    return topic;
}

/* publishes(buf, pos, messages, replies, topics) -> the position of the first packet left */
static PyObject *publishes(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyList_Check(args[2]) || !PyByteArray_Check(args[3]) ||
        !PyDict_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "publishes(bytes, int, list, bytearray, dict)");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AsString(args[0]);
    Py_ssize_t n = PyBytes_Size(args[0]), pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return NULL;
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "publishes: position outside the buffer");
        return NULL;
    }
    PyObject *messages = args[2], *replies = args[3], *topics = args[4];
    mqr_publish p;
    while (mqr_next(buf, (size_t)n, (size_t)pos, &p)) {
        PyObject *topic = topic_of((const char *)buf + p.topic, (Py_ssize_t)p.topic_len, topics);
        if (topic == NULL) {
            if (PyErr_Occurred()) return NULL;
            break;
        }
        PyObject *payload = PyBytes_FromStringAndSize((const char *)buf + p.payload, (Py_ssize_t)(p.end - p.payload));
        PyObject *message = payload == NULL ? NULL
                                            : Py_BuildValue("(NNiO)", topic, payload, (int)p.qos,
                                                            p.retain ? Py_True : Py_False);
        if (message == NULL) {
            if (payload == NULL) Py_DECREF(topic);
            return NULL;
        }
        if (p.qos) { /* PUBACK: 0x40 0x02 and the packet id */
            Py_ssize_t had = PyByteArray_Size(replies);
            if (PyByteArray_Resize(replies, had + 4) < 0) {
                Py_DECREF(message);
                return NULL;
            }
            char *out = PyByteArray_AsString(replies) + had;
            out[0] = 0x40;
            out[1] = 0x02;
            out[2] = (char)buf[p.packet_id];
            out[3] = (char)buf[p.packet_id + 1];
        }
        int bad = PyList_Append(messages, message);
        Py_DECREF(message);
        if (bad < 0) return NULL;
        pos = (Py_ssize_t)p.end;
    }
    return PyLong_FromSsize_t(pos);
}

static PyMethodDef methods[] = {
    {"publishes", (PyCFunction)(void (*)(void))publishes, METH_FASTCALL,
     "publishes(buf, pos, messages, replies, topics) -> position of the first packet left to Python"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "uns.mqtt.wire._fastwire", "The MQTT 3.1.1 reader's common case in C.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastwire(void) { return PyModule_Create(&module); }
