/* uns.sparkplug._speedups, part two: packed sample blocks for the write-ahead log
 * (uns/lake/blocks.py documents the layout, spblock.h checks it).
 *
 * pack_blocks turns the native lane's output of one event-loop iteration (the decoder's
 * rows, each row's born metric, each message's route, seq, bdseq and context) into one
 * record's bytes; join_blocks turns the records of a segment back into joined columns
 * that become Arrow arrays without a copy.  Both run in one C pass, so a record costs a
 * few microseconds however few messages it holds.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "spblock.h"
#include "spdata.h"

static PyObject *str_name, *str_unit, *str_alias;

int blocks_init(void) {
    str_name = PyUnicode_InternFromString("name");
    str_unit = PyUnicode_InternFromString("unit");
    str_alias = PyUnicode_InternFromString("alias");
    return str_name && str_unit && str_alias ? 0 : -1;
}

/* ---------------------------------------------------------------- identities */

static PyObject *item(PyObject *seq, Py_ssize_t i) { /* borrowed; list or tuple */
    return PyList_Check(seq) ? PyList_GetItem(seq, i) : PyTuple_GetItem(seq, i);
}

static Py_ssize_t size_of(PyObject *seq) { return PyList_Check(seq) ? PyList_Size(seq) : PyTuple_Size(seq); }

/* Each object's number in ``known`` ({id(object): number}, in order of first appearance); an
 * object not in it gets the next number and is appended to ``fresh``.  0 or -1. */
static int identities(PyObject *seq, PyObject *known, PyObject *fresh, int32_t *out) {
    Py_ssize_t n = size_of(seq);
    PyObject *last = NULL; /* a run's rows repeat few records: a repeat skips the lookup */
    int32_t last_id = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = item(seq, i);
        if (obj == NULL) return -1;
        if (obj == last) {
            out[i] = last_id;
            continue;
        }
        PyObject *key = PyLong_FromVoidPtr(obj);
        if (key == NULL) return -1;
        PyObject *number = PyDict_GetItemWithError(known, key);
        long value;
        if (number == NULL) {
            Py_ssize_t next = PyErr_Occurred() ? -1 : PyDict_Size(known);
            PyObject *made = next < 0 || next >= INT32_MAX ? NULL : PyLong_FromSsize_t(next);
            int bad = made == NULL || PyDict_SetItem(known, key, made) < 0 || PyList_Append(fresh, obj) < 0;
            Py_XDECREF(made);
            if (bad) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "too many distinct objects");
                Py_DECREF(key);
                return -1;
            }
            value = (long)next;
        } else {
            value = PyLong_AsLong(number);
            if (value == -1 && PyErr_Occurred()) {
                Py_DECREF(key);
                return -1;
            }
        }
        Py_DECREF(key);
        out[i] = last_id = (int32_t)value;
        last = obj;
    }
    return 0;
}

/* ---------------------------------------------------------------- packing */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} buffer;

static int grow(buffer *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = spd_grown(b->cap, b->len + more, 4096);
    uint8_t *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* ``n`` bytes of section space (zeroed, padded to 8), or NULL with an error */
static uint8_t *section(buffer *b, size_t n) {
    size_t padded = spb_pad(n);
    if (grow(b, padded) < 0) return NULL;
    uint8_t *p = b->data + b->len;
    memset(p, 0, padded);
    b->len += padded;
    return p;
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A string column of ``k`` values: ``get(i)`` gives value i (new reference, str or None). */
typedef PyObject *(*text_getter)(PyObject *source, Py_ssize_t i);

static int put_strings(buffer *b, PyObject *source, Py_ssize_t k, text_getter get) {
    size_t at_valid = b->len;
    if (section(b, (size_t)k) == NULL) return -1;
    size_t at_offsets = b->len;
    if (section(b, ((size_t)k + 1) * 4) == NULL) return -1;
    size_t at_data = b->len, total = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *value = get(source, i);
        if (value == NULL) return -1;
        if (value != Py_None) {
            Py_ssize_t n;
            const char *utf8 = PyUnicode_Check(value) ? PyUnicode_AsUTF8AndSize(value, &n) : NULL;
            if (utf8 == NULL) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a text column holds a non-str");
                Py_DECREF(value);
                return -1;
            }
            if (total + (size_t)n > INT32_MAX || grow(b, total + (size_t)n) < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "text columns over 2 GiB");
                Py_DECREF(value);
                return -1;
            }
            memcpy(b->data + at_data + total, utf8, (size_t)n);
            total += (size_t)n;
            b->data[at_valid + (size_t)i] = 1;
        }
        Py_DECREF(value);
        put_u32(b->data + at_offsets + 4 * ((size_t)i + 1), (uint32_t)total);
    }
    /* b->len is still at_data: the text bytes are there (grown above); claim them, padded */
    size_t padded = spb_pad(total);
    if (grow(b, padded) < 0) return -1;
    memset(b->data + at_data + total, 0, padded - total);
    b->len = at_data + padded;
    return 0;
}

static PyObject *get_name(PyObject *records, Py_ssize_t i) { return PyObject_GetAttr(item(records, i), str_name); }
static PyObject *get_unit(PyObject *records, Py_ssize_t i) { return PyObject_GetAttr(item(records, i), str_unit); }
/* a route is (node, device_id, group_id, edge_node_id, message type, path, unmapped) */
static PyObject *route_field(PyObject *routes, Py_ssize_t i, Py_ssize_t field) {
    PyObject *route = item(routes, i);
    if (route == NULL || !PyTuple_Check(route) || PyTuple_Size(route) < 7) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a run's route is not a 7-tuple");
        return NULL;
    }
    PyObject *value = PyTuple_GetItem(route, field);
    Py_XINCREF(value);
    return value;
}
static PyObject *get_group(PyObject *r, Py_ssize_t i) { return route_field(r, i, 2); }
static PyObject *get_edge(PyObject *r, Py_ssize_t i) { return route_field(r, i, 3); }
static PyObject *get_device(PyObject *r, Py_ssize_t i) { return route_field(r, i, 1); }
static PyObject *get_path(PyObject *r, Py_ssize_t i) { return route_field(r, i, 5); }
static PyObject *get_self(PyObject *texts, Py_ssize_t i) {
    PyObject *value = item(texts, i);
    Py_XINCREF(value);
    return value;
}

static int put_i64(uint8_t *p, PyObject *value) {
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    memcpy(p, &v, 8);
    return 0;
}

/* pack_blocks(rows, records, known, new, runs, received, contexts, context_json, segment) -> bytes
 *
 * rows: the decoder's rows (spd_row, 32 bytes each); records: each row's born metric;
 * known/new: as identities() (the segment's registry, or a fresh dict for a record that
 * numbers its own series); runs: per message (route, seq, bdseq, ts, rows); received: per
 * message its receive time; contexts: per message its context (any object, by identity);
 * context_json: called once per distinct context, returns its JSON text or None. */
PyObject *pack_blocks(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[1]) || !PyDict_Check(args[2]) ||
        !PyList_Check(args[3]) || !PyList_Check(args[4]) || !PyList_Check(args[5]) || !PyList_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "pack_blocks(bytes, tuple, dict, list, list, list, list, callable, bool)");
        return NULL;
    }
    PyObject *records = args[1], *known = args[2], *fresh = args[3], *runs = args[4], *received = args[5];
    PyObject *contexts = args[6], *context_json = args[7];
    int segment = PyObject_IsTrue(args[8]);
    if (segment < 0) return NULL;
    Py_ssize_t raw_len = PyBytes_Size(args[0]);
    const spd_row *rows = (const spd_row *)PyBytes_AsString(args[0]);
    Py_ssize_t n = PyTuple_Size(records), m = PyList_Size(runs);
    if (raw_len != n * (Py_ssize_t)sizeof(spd_row) || PyList_Size(received) != m || PyList_Size(contexts) != m ||
        n > INT32_MAX || m > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "pack_blocks: rows, records, runs, received and contexts disagree");
        return NULL;
    }
    buffer b = {0};
    PyObject *routes = PyList_New(0), *distinct_contexts = PyList_New(0), *local = PyDict_New();
    PyObject *route_list = PyList_New(m), *texts = NULL, *result = NULL;
    Py_ssize_t first_new = PyList_Size(fresh);
    if (!routes || !distinct_contexts || !local || !route_list || section(&b, SPB_HEADER) == NULL) goto done;
    memcpy(b.data, SPB_MAGIC, 8);
    /* rows */
    size_t at = b.len;
    if (section(&b, (size_t)n * 8) == NULL || section(&b, (size_t)n * 8) == NULL || section(&b, (size_t)n * 8) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(b.data + at + 8 * (size_t)i, &rows[i].ts, 8);
        memcpy(b.data + at + 8 * ((size_t)n + (size_t)i), &rows[i].ival, 8);
        memcpy(b.data + at + 8 * (2 * (size_t)n + (size_t)i), &rows[i].dval, 8);
    }
    at = b.len;
    if (section(&b, (size_t)n * 4) == NULL) goto done;
    if (identities(records, known, fresh, (int32_t *)(void *)(b.data + at)) < 0) goto done;
    at = b.len;
    if (section(&b, (size_t)n) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) b.data[at + (size_t)i] = rows[i].datatype;
    at = b.len;
    if (section(&b, (size_t)n) == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) b.data[at + (size_t)i] = rows[i].kind;
    /* runs: received, seq, bdseq, bdseq valid, rows, route, context */
    static const size_t run_widths[7] = {8, 8, 8, 1, 4, 4, 4};
    size_t run_at[7];
    for (int i = 0; i < 7; i++) {
        run_at[i] = b.len;
        if (section(&b, (size_t)m * run_widths[i]) == NULL) goto done;
    }
    size_t at_received = run_at[0], at_seq = run_at[1], at_bdseq = run_at[2], at_valid = run_at[3];
    size_t at_rows = run_at[4], at_route = run_at[5], at_context = run_at[6];
    long long total = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *run = PyList_GetItem(runs, i);
        if (!PyTuple_Check(run) || PyTuple_Size(run) != 5) {
            PyErr_SetString(PyExc_TypeError, "a run is not (route, seq, bdseq, ts, rows)");
            goto done;
        }
        PyObject *route = PyTuple_GetItem(run, 0), *bdseq = PyTuple_GetItem(run, 2);
        Py_INCREF(route);
        PyList_SetItem(route_list, i, route);
        if (put_i64(b.data + at_received + 8 * (size_t)i, PyList_GetItem(received, i)) < 0) goto done;
        if (put_i64(b.data + at_seq + 8 * (size_t)i, PyTuple_GetItem(run, 1)) < 0) goto done;
        if (bdseq != Py_None) {
            if (put_i64(b.data + at_bdseq + 8 * (size_t)i, bdseq) < 0) goto done;
            b.data[at_valid + (size_t)i] = 1;
        }
        long k = PyLong_AsLong(PyTuple_GetItem(run, 4));
        if (k == -1 && PyErr_Occurred()) goto done;
        if (k < 0 || k > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "pack_blocks: a run's row count");
            goto done;
        }
        put_u32(b.data + at_rows + 4 * (size_t)i, (uint32_t)k);
        total += k;
    }
    if (total != n) {
        PyErr_SetString(PyExc_ValueError, "pack_blocks: the runs' rows do not add up to the rows");
        goto done;
    }
    if (identities(route_list, local, routes, (int32_t *)(void *)(b.data + at_route)) < 0) goto done;
    PyDict_Clear(local);
    if (identities(contexts, local, distinct_contexts, (int32_t *)(void *)(b.data + at_context)) < 0) goto done;
    /* series: the records new in ``fresh`` */
    Py_ssize_t s = PyList_Size(fresh) - first_new;
    PyObject *born = PyList_GetSlice(fresh, first_new, first_new + s);
    if (born == NULL) goto done;
    at = b.len;
    size_t at_alias_valid = 0;
    if (section(&b, (size_t)s * 8) == NULL || (at_alias_valid = b.len, section(&b, (size_t)s)) == NULL) {
        Py_DECREF(born);
        goto done;
    }
    for (Py_ssize_t i = 0; i < s; i++) {
        PyObject *alias = PyObject_GetAttr(PyList_GetItem(born, i), str_alias);
        if (alias == NULL) {
            Py_DECREF(born);
            goto done;
        }
        if (alias != Py_None) {
            unsigned long long v = PyLong_AsUnsignedLongLong(alias);
            if (v == (unsigned long long)-1 && PyErr_Occurred()) {
                Py_DECREF(alias);
                Py_DECREF(born);
                goto done;
            }
            memcpy(b.data + at + 8 * (size_t)i, &v, 8);
            b.data[at_alias_valid + (size_t)i] = 1;
        }
        Py_DECREF(alias);
    }
    int bad = put_strings(&b, born, s, get_name) < 0 || put_strings(&b, born, s, get_unit) < 0;
    Py_DECREF(born);
    if (bad) goto done;
    /* routes */
    Py_ssize_t r = PyList_Size(routes);
    at = b.len;
    if (section(&b, (size_t)r) == NULL) goto done;
    for (Py_ssize_t i = 0; i < r; i++) {
        PyObject *unmapped = route_field(routes, i, 6);
        int flag = unmapped == NULL ? -1 : PyObject_IsTrue(unmapped);
        Py_XDECREF(unmapped);
        if (flag < 0) goto done;
        b.data[at + (size_t)i] = (uint8_t)flag;
    }
    if (put_strings(&b, routes, r, get_group) < 0 || put_strings(&b, routes, r, get_edge) < 0 ||
        put_strings(&b, routes, r, get_device) < 0 || put_strings(&b, routes, r, get_path) < 0)
        goto done;
    /* contexts: their JSON text, made once per distinct context */
    Py_ssize_t c = PyList_Size(distinct_contexts);
    texts = PyList_New(c);
    if (texts == NULL) goto done;
    for (Py_ssize_t i = 0; i < c; i++) {
        PyObject *text = PyObject_CallFunctionObjArgs(context_json, PyList_GetItem(distinct_contexts, i), NULL);
        if (text == NULL) goto done;
        PyList_SetItem(texts, i, text);
    }
    if (put_strings(&b, texts, c, get_self) < 0) goto done;
    uint32_t counts[6] = {(uint32_t)n, (uint32_t)s, (uint32_t)m, (uint32_t)r, (uint32_t)c,
                          segment ? SPB_SEGMENT_SERIES : 0u};
    for (int i = 0; i < 6; i++) put_u32(b.data + 8 + 4 * i, counts[i]);
    result = PyBytes_FromStringAndSize((const char *)b.data, (Py_ssize_t)b.len);
done:
    PyMem_Free(b.data);
    Py_XDECREF(routes);
    Py_XDECREF(distinct_contexts);
    Py_XDECREF(local);
    Py_XDECREF(route_list);
    Py_XDECREF(texts);
    return result;
}

/* ---------------------------------------------------------------- joining */

enum { MAX_PARTS = 1 << 20 };

typedef struct {
    uint8_t *p;
    size_t len;
    PyObject *bytes;
} column;

static int alloc(column *c, size_t len) {
    c->bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (c->bytes == NULL) return -1;
    c->p = (uint8_t *)PyBytes_AsString(c->bytes);
    memset(c->p, 0, len);
    c->len = 0;
    return 0;
}

static void append(column *c, const uint8_t *src, size_t n) {
    if (n) memcpy(c->p + c->len, src, n);
    c->len += n;
}

/* bits of an Arrow validity bitmap from validity bytes */
static void bits(column *c, size_t *count, const uint8_t *valid, uint32_t n) {
    for (uint32_t i = 0; i < n; i++, (*count)++)
        if (valid[i]) c->p[*count >> 3] |= (uint8_t)(1u << (*count & 7));
}

/* int32 ids moved by ``shift`` */
static void shifted(column *c, const uint8_t *src, uint32_t n, int64_t shift) {
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = (int32_t)(spb_i32(src + 4 * (size_t)i) + shift);
        memcpy(c->p + c->len, &v, 4);
        c->len += 4;
    }
}

typedef struct {
    column valid, offsets, data;
    size_t count;    /* values so far */
    uint32_t bytes;  /* text bytes so far */
} text_column;

static int text_alloc(text_column *t, size_t k, size_t bytes) {
    t->count = 0;
    t->bytes = 0;
    if (alloc(&t->valid, (k + 7) / 8) < 0 || alloc(&t->offsets, (k + 1) * 4) < 0 || alloc(&t->data, bytes) < 0)
        return -1;
    t->offsets.len = 4; /* offsets[0] = 0 */
    return 0;
}

static void text_append(text_column *t, const spb_strings *s, uint32_t k) {
    bits(&t->valid, &t->count, s->valid, k);
    for (uint32_t i = 1; i <= k; i++) {
        uint32_t o = t->bytes + (uint32_t)spb_i32(s->offsets + 4 * (size_t)i);
        memcpy(t->offsets.p + t->offsets.len, &o, 4);
        t->offsets.len += 4;
    }
    append(&t->data, s->data, s->bytes);
    t->bytes += s->bytes;
}

#define TEXTS 7 /* metric, unit, group, edge, device, path, context */

/* join_blocks(parts) -> tuple: the packed block records of one segment (bytes-like, in
 * order) as joined columns (see uns.lake.blocks.join_blocks); ValueError for a record that
 * is not what pack_blocks writes. */
PyObject *join_blocks(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "join_blocks(list)");
        return NULL;
    }
    Py_ssize_t count = PyList_Size(arg);
    if (count > MAX_PARTS) {
        PyErr_SetString(PyExc_ValueError, "join_blocks: too many records");
        return NULL;
    }
    Py_buffer *views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    spb_record *recs = PyMem_Calloc((size_t)count + 1, sizeof(spb_record));
    Py_ssize_t got = 0;
    PyObject *result = NULL;
    column cols[17];
    text_column texts[TEXTS];
    memset(cols, 0, sizeof cols);
    memset(texts, 0, sizeof texts);
    if (views == NULL || recs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t n = 0, m = 0, s = 0, r = 0, c = 0, text_bytes[TEXTS] = {0};
    for (; got < count; got++) {
        if (PyObject_GetBuffer(PyList_GetItem(arg, got), &views[got], PyBUF_SIMPLE) < 0) goto done;
        spb_record *rec = &recs[got];
        if (spb_parse(views[got].buf, (size_t)views[got].len, rec) != SPB_OK) {
            PyErr_Format(PyExc_ValueError, "bad packed block record %zd", got);
            got++;
            goto done;
        }
        /* a record numbering the segment's series may use those of earlier records */
        if ((rec->flags & SPB_SEGMENT_SERIES) && !spb_ids_ok(rec->series_of_row, rec->rows, (uint32_t)(s + rec->series))) {
            PyErr_Format(PyExc_ValueError, "packed block record %zd names a series not defined", got);
            got++;
            goto done;
        }
        n += rec->rows;
        m += rec->runs;
        s += rec->series;
        r += rec->routes;
        c += rec->contexts;
        const spb_strings *st[TEXTS] = {&rec->metric, &rec->unit, &rec->group, &rec->edge, &rec->device, &rec->path,
                                        &rec->context_text};
        for (int i = 0; i < TEXTS; i++) text_bytes[i] += st[i]->bytes;
    }
    if (n > INT32_MAX || m > INT32_MAX || s > INT32_MAX || r > INT32_MAX || c > INT32_MAX) goto too_big;
    for (int i = 0; i < TEXTS; i++)
        if (text_bytes[i] > INT32_MAX) goto too_big;
    /* rows: ts ival dval series datatype kind; runs: received seq bdseq bdseq-bits rows route
       context; series: alias alias-bits; routes: unmapped */
    size_t sizes[17] = {n * 8, n * 8, n * 8, n * 4, n, n, m * 8, m * 8, m * 8, (m + 7) / 8, m * 4, m * 4, m * 4,
                        s * 8, (s + 7) / 8, r, 0};
    for (int i = 0; i < 16; i++)
        if (alloc(&cols[i], sizes[i]) < 0) goto done;
    uint64_t text_counts[TEXTS] = {s, s, r, r, r, r, c};
    for (int i = 0; i < TEXTS; i++)
        if (text_alloc(&texts[i], text_counts[i], text_bytes[i]) < 0) goto done;
    int64_t series_base = 0, route_base = 0, context_base = 0;
    size_t bdseq_bits = 0, alias_bits = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        const spb_record *rec = &recs[k];
        append(&cols[0], rec->ts, (size_t)rec->rows * 8);
        append(&cols[1], rec->ival, (size_t)rec->rows * 8);
        append(&cols[2], rec->dval, (size_t)rec->rows * 8);
        shifted(&cols[3], rec->series_of_row, rec->rows, (rec->flags & SPB_SEGMENT_SERIES) ? 0 : series_base);
        append(&cols[4], rec->datatype, rec->rows);
        append(&cols[5], rec->kind, rec->rows);
        append(&cols[6], rec->received, (size_t)rec->runs * 8);
        append(&cols[7], rec->seq, (size_t)rec->runs * 8);
        append(&cols[8], rec->bdseq, (size_t)rec->runs * 8);
        bits(&cols[9], &bdseq_bits, rec->bdseq_valid, rec->runs);
        append(&cols[10], rec->run_rows, (size_t)rec->runs * 4);
        shifted(&cols[11], rec->route, rec->runs, route_base);
        shifted(&cols[12], rec->context, rec->runs, context_base);
        append(&cols[13], rec->alias, (size_t)rec->series * 8);
        bits(&cols[14], &alias_bits, rec->alias_valid, rec->series);
        append(&cols[15], rec->unmapped, rec->routes);
        const spb_strings *st[TEXTS] = {&rec->metric, &rec->unit, &rec->group, &rec->edge, &rec->device, &rec->path,
                                        &rec->context_text};
        uint32_t ks[TEXTS] = {rec->series, rec->series, rec->routes, rec->routes, rec->routes, rec->routes,
                              rec->contexts};
        for (int i = 0; i < TEXTS; i++) text_append(&texts[i], st[i], ks[i]);
        series_base += rec->series;
        route_base += rec->routes;
        context_base += rec->contexts;
    }
    result = PyTuple_New(5 + 16 + 3 * TEXTS);
    if (result == NULL) goto done;
    uint64_t counts[5] = {n, m, s, r, c};
    for (int i = 0; i < 5; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (v == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SetItem(result, i, v);
    }
    for (int i = 0; i < 16; i++) {
        PyTuple_SetItem(result, 5 + i, cols[i].bytes);
        cols[i].bytes = NULL;
    }
    for (int i = 0; i < TEXTS; i++) {
        PyTuple_SetItem(result, 21 + 3 * i, texts[i].valid.bytes);
        PyTuple_SetItem(result, 22 + 3 * i, texts[i].offsets.bytes);
        PyTuple_SetItem(result, 23 + 3 * i, texts[i].data.bytes);
        texts[i].valid.bytes = texts[i].offsets.bytes = texts[i].data.bytes = NULL;
    }
    goto done;
too_big:
    PyErr_SetString(PyExc_ValueError, "join_blocks: a segment over 2^31 rows or text bytes");
done:
    for (Py_ssize_t k = 0; k < got; k++)
        if (views[k].obj != NULL) PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    PyMem_Free(recs);
    for (int i = 0; i < 17; i++) Py_XDECREF(cols[i].bytes);
    for (int i = 0; i < TEXTS; i++) {
        Py_XDECREF(texts[i].valid.bytes);
        Py_XDECREF(texts[i].offsets.bytes);
        Py_XDECREF(texts[i].data.bytes);
    }
    return result;
}
