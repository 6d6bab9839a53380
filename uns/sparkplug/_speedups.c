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

/* decode_data(raw, by_alias, by_name, received_at, max_metrics) -> (seq, rows, records, ts) | None
 *
 * rows: 32 bytes per sample (spd_row); records: the born record of each row; ts: the
 * rows' common source time, None when they differ (or there is none).  None when
 * the payload is not an ordinary in-order-able DATA payload this decoder types with
 * certainty (see spdata.h): nothing was decided, the Python path takes the message. */
static PyObject *decode_data(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_data() takes 5 arguments");
        return NULL;
    }
    PyObject *raw = args[0], *by_alias = args[1], *by_name = args[2];
    if (!PyBytes_Check(raw) || !PyDict_Check(by_alias) || !PyDict_Check(by_name)) {
        PyErr_SetString(PyExc_TypeError, "decode_data(bytes, dict, dict, int, int)");
        return NULL;
    }
    long long received_at = PyLong_AsLongLong(args[3]);
    long long max_metrics = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(raw, &data, &len) < 0) return NULL;
    /* each metric takes at least two bytes (its tag and length) */
    size_t cap = (size_t)len / 2 + 1;
    if (max_metrics > 0 && (size_t)max_metrics < cap) cap = (size_t)max_metrics;
    if (ensure_scratch(cap) < 0) return NULL;
    spd_payload payload;
    if (spd_parse_payload((const uint8_t *)data, (size_t)len, &payload, scratch, cap) != SPD_OK)
        Py_RETURN_NONE;
    /* seq: present and 0..255 (the session's rule for the fast path) */
    if (!payload.has_seq || payload.seq > 255) Py_RETURN_NONE;
    int64_t default_ts;
    if (payload.has_timestamp) {
        if (payload.timestamp > (uint64_t)INT64_MAX) Py_RETURN_NONE;
        default_ts = (int64_t)payload.timestamp;
    } else {
        default_ts = (int64_t)received_at;
    }
    size_t count = payload.count;
    PyObject *rows = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(count * sizeof(spd_row)));
    PyObject *records = rows ? PyTuple_New((Py_ssize_t)count) : NULL;
    if (records == NULL) {
        Py_XDECREF(rows);
        return NULL;
    }
    spd_row *out = (spd_row *)PyBytes_AsString(rows);
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        const spd_metric *m = &scratch[i];
        PyObject *record = lookup(m, by_alias, by_name);
        if (record == NULL) goto other;
        PyObject *packed = PyObject_GetAttr(record, native_name);
        if (packed == NULL) goto fail;
        long code = PyLong_AsLong(packed);
        Py_DECREF(packed);
        if (code == -1 && PyErr_Occurred()) goto fail;
        if (spd_row_of(m, (uint32_t)(code & 0xFF), default_ts, &out[n]) != SPD_OK) goto other;
        if (!(code & 0x100)) continue; /* born, typed, but not a sample (e.g. bdSeq) */
        Py_INCREF(record);
        PyTuple_SetItem(records, (Py_ssize_t)n, record);
        n++;
    }
    if (n < count) { /* some metrics were not samples: shrink both */
        PyObject *fewer_rows = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)(n * sizeof(spd_row)));
        PyObject *fewer = fewer_rows ? PyTuple_GetSlice(records, 0, (Py_ssize_t)n) : NULL;
        Py_DECREF(rows);
        Py_DECREF(records);
        if (fewer == NULL) {
            Py_XDECREF(fewer_rows);
            return NULL;
        }
        rows = fewer_rows;
        records = fewer;
    }
    /* the rows' common source time (the usual case), or None */
    PyObject *common;
    const spd_row *first = (const spd_row *)PyBytes_AsString(rows);
    size_t same = 1;
    while (same < n && first[same].ts == first[0].ts) same++;
    if (n > 0 && same == n) {
        common = PyLong_FromLongLong(first[0].ts);
        if (common == NULL) goto fail;
    } else {
        common = Py_None;
        Py_INCREF(common);
    }
    return Py_BuildValue("(KNNN)", (unsigned long long)payload.seq, rows, records, common);
other:
    if (PyErr_Occurred()) goto fail;
    Py_DECREF(rows);
    Py_DECREF(records);
    Py_RETURN_NONE;
fail:
    Py_DECREF(rows);
    Py_DECREF(records);
    return NULL;
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

static PyMethodDef methods[] = {
    {"decode_data", (PyCFunction)(void (*)(void))decode_data, METH_FASTCALL,
     "decode_data(raw, by_alias, by_name, received_at, max_metrics) -> (seq, rows, records, ts) | None"},
    {"columns", columns, METH_O, "columns(rows) -> (ts, ival, dval, datatype, kind)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "uns.sparkplug._speedups", "The native DATA decoder (uns.sparkplug.native).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    native_name = PyUnicode_InternFromString("native");
    if (native_name == NULL) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    if (PyModule_AddIntConstant(mod, "ROW_BYTES", (long)sizeof(spd_row)) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
