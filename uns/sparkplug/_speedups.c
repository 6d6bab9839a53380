/* uns.sparkplug._speedups: the native DATA decoder (see uns/sparkplug/native.py).
 *
 * Built by setuptools at install time against the stable ABI (Python 3.11+), optional:
 * without it uns runs the pure-Python decoder, which stays the reference.  The parsing
 * and typing are plain C in spdata.h (fuzzed on their own); this file only adds the
 * born-metric lookups and the Python objects.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "spdata.h"

static PyObject *native_name; /* "native": BornMetric's packed datatype code | is_sample << 8 */
/* attribute names decode_many reads (uns.sparkplug.nodes.NodeState, Owner, reorder.SeqTracker) */
static PyObject *str_own, *str_online, *str_tracker, *str_deadline, *str_devices, *str_by_alias,
    *str_by_name, *str_expected, *str_digests, *str_bdseq;
static spd_metric *scratch;   /* parsed metrics of one payload (the GIL serialises calls) */
static size_t scratch_cap;

static int ensure_scratch(size_t n) {
    if (n <= scratch_cap) return 0;
    spd_metric *grown = PyMem_Realloc(scratch, n * sizeof(spd_metric));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    scratch = grown;
    scratch_cap = n;
    return 0;
}

/* The born record of a metric (a borrowed reference), or NULL with no error: not born,
 * or a name that is not UTF-8 (the Python path rejects or handles it). */
static PyObject *lookup(const spd_metric *m, PyObject *by_alias, PyObject *by_name) {
    PyObject *key, *record;
    if (m->has_alias) {
        key = PyLong_FromUnsignedLongLong(m->alias);
        if (key == NULL) return NULL;
        record = PyDict_GetItemWithError(by_alias, key);
    } else {
        key = PyUnicode_DecodeUTF8(m->name ? (const char *)m->name : "", (Py_ssize_t)m->name_len, NULL);
        if (key == NULL) {
            PyErr_Clear();
            return NULL;
        }
        record = PyDict_GetItemWithError(by_name, key);
    }
    Py_DECREF(key);
    return record;
}

/* A growing output: rows and their born records (owned references). */
typedef struct {
    spd_row *rows;
    PyObject **records;
    size_t n, cap;
} output;

static int out_reserve(output *o, size_t more) {
    if (o->n + more <= o->cap) return 0;
    size_t cap = spd_grown(o->cap, o->n + more, 256);
    spd_row *rows = PyMem_Realloc(o->rows, cap * sizeof(spd_row));
    if (rows == NULL) goto nomem;
    o->rows = rows;
    PyObject **records = PyMem_Realloc(o->records, cap * sizeof(PyObject *));
    if (records == NULL) goto nomem;
    o->records = records;
    o->cap = cap;
    return 0;
nomem:
    PyErr_NoMemory();
    return -1;
}

static void out_truncate(output *o, size_t n) {
    while (o->n > n) Py_DECREF(o->records[--o->n]);
}

static void out_free(output *o) {
    out_truncate(o, 0);
    PyMem_Free(o->rows);
    PyMem_Free(o->records);
}

/* Decode one payload into ``o`` (appending its samples).  1: done (*seq, *common: the rows'
 * common ts or -1 with *uniform 0); 0: not this decoder's (nothing appended); -1: error. */
static int decode_into(PyObject *raw, PyObject *by_alias, PyObject *by_name, long long received_at,
                       long long max_metrics, output *o, uint64_t *seq, int64_t *common, int *uniform) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(raw, &data, &len) < 0) return -1;
    /* each metric takes at least two bytes (its tag and length) */
    size_t cap = (size_t)len / 2 + 1;
    if (max_metrics > 0 && (size_t)max_metrics < cap) cap = (size_t)max_metrics;
    if (ensure_scratch(cap) < 0) return -1;
    spd_payload payload;
    if (spd_parse_payload((const uint8_t *)data, (size_t)len, &payload, scratch, cap) != SPD_OK) return 0;
    /* seq: present and 0..255 (the session's rule for the fast path) */
    if (!payload.has_seq || payload.seq > 255) return 0;
    int64_t default_ts;
    if (payload.has_timestamp) {
        if (payload.timestamp > (uint64_t)INT64_MAX) return 0;
        default_ts = (int64_t)payload.timestamp;
    } else {
        default_ts = (int64_t)received_at;
    }
    size_t count = payload.count, before = o->n;
    if (out_reserve(o, count) < 0) return -1;
    for (size_t i = 0; i < count; i++) {
        const spd_metric *m = &scratch[i];
        PyObject *record = lookup(m, by_alias, by_name);
        if (record == NULL) goto other;
        PyObject *packed = PyObject_GetAttr(record, native_name);
        if (packed == NULL) goto fail;
        long code = PyLong_AsLong(packed);
        Py_DECREF(packed);
        if (code == -1 && PyErr_Occurred()) goto fail;
        if (spd_row_of(m, (uint32_t)(code & 0xFF), default_ts, &o->rows[o->n]) != SPD_OK) goto other;
        if (!(code & 0x100)) continue; /* born, typed, but not a sample (e.g. bdSeq) */
        Py_INCREF(record);
        o->records[o->n++] = record;
    }
    *seq = payload.seq;
    *uniform = o->n > before;
    *common = *uniform ? o->rows[before].ts : -1;
    for (size_t i = before + 1; i < o->n && *uniform; i++) *uniform = o->rows[i].ts == *common;
    return 1;
other:
    if (PyErr_Occurred()) goto fail;
    out_truncate(o, before);
    return 0;
fail:
    out_truncate(o, before);
    return -1;
}

/* The rows and records of ``o`` from ``first`` on as (bytes, tuple). */
static PyObject *out_objects(output *o, size_t first) {
    size_t n = o->n - first;
    PyObject *rows = PyBytes_FromStringAndSize((const char *)(o->rows + first), (Py_ssize_t)(n * sizeof(spd_row)));
    PyObject *records = rows ? PyTuple_New((Py_ssize_t)n) : NULL;
    if (records == NULL) {
        Py_XDECREF(rows);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        Py_INCREF(o->records[first + i]);
        PyTuple_SetItem(records, (Py_ssize_t)i, o->records[first + i]);
    }
    return Py_BuildValue("(NN)", rows, records);
}

/* decode_data(raw, by_alias, by_name, received_at, max_metrics) -> (seq, rows, records, ts) | None
 *
 * rows: 32 bytes per sample (spd_row); records: the born record of each row; ts: the
 * rows' common source time, None when they differ (or there is none).  None when the
 * payload is not an ordinary DATA payload this decoder types with certainty (see
 * spdata.h): nothing was decided, the Python path takes the message. */
static PyObject *decode_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyDict_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "decode_data(bytes, dict, dict, int, int)");
        return NULL;
    }
    long long received_at = PyLong_AsLongLong(args[3]);
    long long max_metrics = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    output o = {0};
    uint64_t seq;
    int64_t common;
    int uniform;
    int got = decode_into(args[0], args[1], args[2], received_at, max_metrics, &o, &seq, &common, &uniform);
    if (got <= 0) {
        out_free(&o);
        if (got < 0) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *pair = out_objects(&o, 0);
    out_free(&o);
    if (pair == NULL) return NULL;
    PyObject *ts = uniform ? PyLong_FromLongLong(common) : (Py_INCREF(Py_None), Py_None);
    if (ts == NULL) {
        Py_DECREF(pair);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(KOON)", (unsigned long long)seq, PyTuple_GetItem(pair, 0),
                                     PyTuple_GetItem(pair, 1), ts);
    Py_DECREF(pair);
    return result;
}

static PyObject *attr(PyObject *obj, PyObject *name) { return PyObject_GetAttr(obj, name); }

/* One message of decode_many: 1 decoded (a run appended), 0 leave it to Python, -1 error. */
static int many_one(PyObject *message, PyObject *routes, long long received_at, long long max_metrics,
                    long long max_payload, output *o, PyObject *runs) {
    if (!PyTuple_Check(message) || PyTuple_Size(message) < 2) return 0;
    PyObject *topic = PyTuple_GetItem(message, 0), *raw = PyTuple_GetItem(message, 1);
    if (topic == NULL || raw == NULL || !PyUnicode_Check(topic) || !PyBytes_Check(raw)) return 0;
    if (max_payload > 0 && PyBytes_Size(raw) > max_payload) return 0;
    PyObject *route = PyDict_GetItemWithError(routes, topic); /* (node, device_id, ...) */
    if (route == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(route) || PyTuple_Size(route) < 2) return 0;
    PyObject *node = PyTuple_GetItem(route, 0), *device = PyTuple_GetItem(route, 1);
    int result = 0;
    PyObject *own = NULL, *online = NULL, *tracker = NULL, *deadline = NULL, *owner = NULL, *devices = NULL;
    PyObject *by_alias = NULL, *by_name = NULL, *expected = NULL, *digests = NULL, *bdseq = NULL;
    PyObject *next = NULL, *digest = NULL, *run = NULL;
    size_t before = o->n;
    /* the node's and the owner's state, read live: only an online owner of a node without a
       reorder buffer takes this path (everything else changes state in Python first) */
    if (!(own = attr(node, str_own)) || !(online = attr(own, str_online))) goto error;
    if (online != Py_True) goto done;
    if (!(tracker = attr(node, str_tracker)) || !(deadline = attr(tracker, str_deadline))) goto error;
    if (deadline != Py_None) goto done;
    if (device == Py_None) {
        owner = own;
        Py_INCREF(owner);
    } else {
        if (!(devices = attr(node, str_devices))) goto error;
        owner = PyDict_Check(devices) ? PyDict_GetItemWithError(devices, device) : NULL;
        if (owner == NULL) goto check;
        Py_INCREF(owner);
        Py_DECREF(online);
        if (!(online = attr(owner, str_online))) goto error;
        if (online != Py_True) goto done;
    }
    if (!(by_alias = attr(owner, str_by_alias)) || !(by_name = attr(owner, str_by_name))) goto error;
    if (!PyDict_Check(by_alias) || !PyDict_Check(by_name)) goto done;
    uint64_t seq;
    int64_t common;
    int uniform;
    int got = decode_into(raw, by_alias, by_name, received_at, max_metrics, o, &seq, &common, &uniform);
    if (got < 0) goto error;
    if (got == 0) goto done;
    if (!uniform) goto undo; /* one context per run: rows of several times take the Python path */
    if (!(expected = attr(tracker, str_expected))) goto undo_error;
    if (expected != Py_None) {
        long long want = PyLong_AsLongLong(expected);
        if (want == -1 && PyErr_Occurred()) goto undo_error;
        if (want != (long long)seq) goto undo;
    }
    /* tracker.processed(seq, hash(raw)): the digest for duplicate detection, the next seq */
    if (!(digests = attr(tracker, str_digests)) || !PyList_Check(digests) || PyList_Size(digests) != 256)
        goto undo_error;
    Py_hash_t h = PyObject_Hash(raw);
    if (h == -1 || !(digest = PyLong_FromSsize_t(h))) goto undo_error;
    if (!(next = PyLong_FromLong((long)((seq + 1) & 255)))) goto undo_error;
    if (!(bdseq = attr(node, str_bdseq))) goto undo_error;
    run = Py_BuildValue("(OKOLn)", route, (unsigned long long)seq, bdseq, (long long)common,
                        (Py_ssize_t)(o->n - before));
    if (run == NULL || PyList_Append(runs, run) < 0) goto undo_error;
    Py_INCREF(digest);
    if (PyList_SetItem(digests, (Py_ssize_t)seq, digest) < 0) goto error;
    if (PyObject_SetAttr(tracker, str_expected, next) < 0) goto error;
    result = 1;
    goto done;
check:
    if (PyErr_Occurred()) goto error;
    goto done;
undo_error:
    if (digests != NULL && !PyErr_Occurred()) { /* not a tracker we know: leave it to Python */
        out_truncate(o, before);
        goto done;
    }
    out_truncate(o, before);
    goto error;
undo:
    out_truncate(o, before);
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(own);
    Py_XDECREF(online);
    Py_XDECREF(tracker);
    Py_XDECREF(deadline);
    Py_XDECREF(owner);
    Py_XDECREF(devices);
    Py_XDECREF(by_alias);
    Py_XDECREF(by_name);
    Py_XDECREF(expected);
    Py_XDECREF(digests);
    Py_XDECREF(bdseq);
    Py_XDECREF(next);
    Py_XDECREF(digest);
    Py_XDECREF(run);
    return result;
}

/* decode_many(messages, start, routes, received_at, max_metrics, max_payload)
 *     -> (next, rows, records, runs)
 *
 * The messages from ``start`` on, as long as each is ordinary in-order DATA of a topic in
 * ``routes`` (topic -> (node, device_id, ...)) whose owner is online: decoded into one set of
 * rows, each message's seq recorded in its node's tracker as ``SeqTracker.processed`` does.
 * Stops at the first message it leaves to Python (``next``: its index).  ``runs``: per
 * message (route, seq, bdseq, ts, rows). */
static PyObject *decode_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6 || !PyList_Check(args[0]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "decode_many(list, int, dict, int, int, int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    long long received_at = PyLong_AsLongLong(args[3]);
    long long max_metrics = PyLong_AsLongLong(args[4]);
    long long max_payload = PyLong_AsLongLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    PyObject *runs = PyList_New(0);
    if (runs == NULL) return NULL;
    output o = {0};
    Py_ssize_t i = start < 0 ? 0 : start, end = PyList_Size(args[0]);
    for (; i < end; i++) {
        int got = many_one(PyList_GetItem(args[0], i), args[2], received_at, max_metrics, max_payload, &o, runs);
        if (got < 0) {
            if (i > start) { /* keep what the earlier messages decided; this one goes to Python */
                PyErr_Clear();
                break;
            }
            out_free(&o);
            Py_DECREF(runs);
            return NULL;
        }
        if (got == 0) break;
    }
    PyObject *pair = out_objects(&o, 0);
    out_free(&o);
    if (pair == NULL) {
        Py_DECREF(runs);
        return NULL;
    }
    PyObject *result = Py_BuildValue("(nOON)", i, PyTuple_GetItem(pair, 0), PyTuple_GetItem(pair, 1), runs);
    Py_DECREF(pair);
    return result;
}

/* columns(rows) -> (ts, ival, dval, datatype, kind): the rows' fields as packed
 * little-endian columns (int64, int64, float64, uint8, uint8), ready for Arrow buffers. */
static PyObject *columns(PyObject *self, PyObject *arg) {
    (void)self;
    char *data;
    Py_ssize_t len;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "columns() takes bytes");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(arg, &data, &len) < 0) return NULL;
    if (len % (Py_ssize_t)sizeof(spd_row)) {
        PyErr_SetString(PyExc_ValueError, "columns(): not a whole number of rows");
        return NULL;
    }
    Py_ssize_t n = len / (Py_ssize_t)sizeof(spd_row);
    PyObject *ts = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *iv = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *dv = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *dt = PyBytes_FromStringAndSize(NULL, n);
    PyObject *kd = PyBytes_FromStringAndSize(NULL, n);
    if (!ts || !iv || !dv || !dt || !kd) {
        Py_XDECREF(ts);
        Py_XDECREF(iv);
        Py_XDECREF(dv);
        Py_XDECREF(dt);
        Py_XDECREF(kd);
        return NULL;
    }
    int64_t *pts = (int64_t *)PyBytes_AsString(ts), *piv = (int64_t *)PyBytes_AsString(iv);
    double *pdv = (double *)PyBytes_AsString(dv);
    uint8_t *pdt = (uint8_t *)PyBytes_AsString(dt), *pkd = (uint8_t *)PyBytes_AsString(kd);
    const spd_row *rows = (const spd_row *)data;
    for (Py_ssize_t i = 0; i < n; i++) {
        pts[i] = rows[i].ts;
        piv[i] = rows[i].ival;
        pdv[i] = rows[i].dval;
        pdt[i] = rows[i].datatype;
        pkd[i] = rows[i].kind;
    }
    return Py_BuildValue("(NNNNN)", ts, iv, dv, dt, kd);
}

/* uns/sparkplug/_blocks.c: packed sample blocks for the write-ahead log */
int blocks_init(void);
PyObject *pack_blocks(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *join_blocks(PyObject *self, PyObject *arg);

static PyMethodDef methods[] = {
    {"decode_data", (PyCFunction)(void (*)(void))decode_data, METH_FASTCALL,
     "decode_data(raw, by_alias, by_name, received_at, max_metrics) -> (seq, rows, records, ts) | None"},
    {"decode_many", (PyCFunction)(void (*)(void))decode_many, METH_FASTCALL,
     "decode_many(messages, start, routes, received_at, max_metrics, max_payload) -> (next, rows, records, runs)"},
    {"columns", columns, METH_O, "columns(rows) -> (ts, ival, dval, datatype, kind)"},
    {"pack_blocks", (PyCFunction)(void (*)(void))pack_blocks, METH_FASTCALL,
     "pack_blocks(rows, records, known, new, runs, received, contexts, context_json, segment) -> bytes"},
    {"join_blocks", join_blocks, METH_O, "join_blocks(records) -> joined columns of packed block records"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "uns.sparkplug._speedups", "The native DATA decoder (uns.sparkplug.native).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    native_name = PyUnicode_InternFromString("native");
    str_own = PyUnicode_InternFromString("own");
    str_online = PyUnicode_InternFromString("online");
    str_tracker = PyUnicode_InternFromString("tracker");
    str_deadline = PyUnicode_InternFromString("deadline");
    str_devices = PyUnicode_InternFromString("devices");
    str_by_alias = PyUnicode_InternFromString("by_alias");
    str_by_name = PyUnicode_InternFromString("by_name");
    str_expected = PyUnicode_InternFromString("expected");
    str_digests = PyUnicode_InternFromString("_digests");
    str_bdseq = PyUnicode_InternFromString("bdseq");
    if (blocks_init() < 0) return NULL;
    if (!native_name || !str_own || !str_online || !str_tracker || !str_deadline || !str_devices ||
        !str_by_alias || !str_by_name || !str_expected || !str_digests || !str_bdseq)
        return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    if (PyModule_AddIntConstant(mod, "ROW_BYTES", (long)sizeof(spd_row)) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
