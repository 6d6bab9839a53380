/* Packed sample blocks: the write-ahead log's columns of natively decoded DATA (plain C, no
 * Python; the fuzz target links it as is).  uns/lake/blocks.py documents the layout; this
 * header checks one record's bytes and finds its columns, the extension's glue packs and
 * joins them.  Every count and offset is checked against the bytes before anything is
 * read: a record that is not exactly what the packer writes is refused (SPB_BAD).
 */
#ifndef UNS_SPBLOCK_H
#define UNS_SPBLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPB_OK 0
#define SPB_BAD (-1)
#define SPB_MAGIC "UNSBLK1\n"
#define SPB_HEADER 48
#define SPB_SEGMENT_SERIES 1u /* flags: series numbers count the segment's series */
#define SPB_MAX_DATATYPE 34
#define SPB_MAX_KIND 3

/* One string column: k validity bytes, k+1 offsets, the UTF-8 bytes. */
typedef struct {
    const uint8_t *valid;
    const uint8_t *offsets; /* int32 LE; may be unaligned in a caller's buffer: read with spb_i32 */
    const uint8_t *data;
    uint32_t bytes;
} spb_strings;

typedef struct {
    uint32_t rows, series, runs, routes, contexts, flags;
    /* rows */
    const uint8_t *ts, *ival, *dval, *series_of_row, *datatype, *kind;
    /* runs */
    const uint8_t *received, *seq, *bdseq, *bdseq_valid, *run_rows, *route, *context;
    /* series */
    const uint8_t *alias, *alias_valid;
    spb_strings metric, unit;
    /* routes */
    const uint8_t *unmapped;
    spb_strings group, edge, device, path;
    /* contexts */
    spb_strings context_text;
} spb_record;

static uint32_t spb_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t spb_i32(const uint8_t *p) {
    uint32_t v = spb_u32(p);
    int32_t out;
    memcpy(&out, &v, 4);
    return out;
}

static size_t spb_pad(size_t n) { return (n + 7) & ~(size_t)7; }

/* A cursor over the record: take() hands out ``n`` bytes (then skips to the next 8-byte
 * boundary) or fails when they are not there. */
typedef struct {
    const uint8_t *base;
    size_t pos, len;
    int bad;
} spb_cursor;

static const uint8_t *spb_take(spb_cursor *c, uint64_t n) {
    if (c->bad || n > c->len - c->pos) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *p = c->base + c->pos;
    size_t padded = spb_pad((size_t)n);
    if (padded > c->len - c->pos) { /* the last section's padding must be there too */
        c->bad = 1;
        return NULL;
    }
    c->pos += padded;
    return p;
}

static int spb_flags_ok(const uint8_t *p, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (p[i] > 1) return 0;
    return 1;
}

static int spb_take_strings(spb_cursor *c, uint32_t k, spb_strings *s) {
    s->valid = spb_take(c, k);
    s->offsets = spb_take(c, ((uint64_t)k + 1) * 4);
    if (c->bad || !spb_flags_ok(s->valid, k)) return SPB_BAD;
    int32_t last = 0;
    for (uint32_t i = 0; i <= k; i++) {
        int32_t o = spb_i32(s->offsets + 4 * (size_t)i);
        if ((i == 0 && o != 0) || o < last) return SPB_BAD;
        if (i < k && !s->valid[i] && spb_i32(s->offsets + 4 * ((size_t)i + 1)) != o) return SPB_BAD;
        last = o;
    }
    s->bytes = (uint32_t)last;
    s->data = spb_take(c, s->bytes);
    return c->bad ? SPB_BAD : SPB_OK;
}

static int spb_ids_ok(const uint8_t *p, uint32_t n, uint32_t limit) {
    for (uint32_t i = 0; i < n; i++) {
        int32_t v = spb_i32(p + 4 * (size_t)i);
        if (v < 0 || (uint32_t)v >= limit) return 0;
    }
    return 1;
}

/* Check one record and find its columns.  Series numbers of a record flagged
 * SPB_SEGMENT_SERIES are checked by the caller (they count earlier records' series). */
static int spb_parse(const uint8_t *p, size_t len, spb_record *r) {
    memset(r, 0, sizeof *r);
    if (len < SPB_HEADER || memcmp(p, SPB_MAGIC, 8) != 0) return SPB_BAD;
    r->rows = spb_u32(p + 8);
    r->series = spb_u32(p + 12);
    r->runs = spb_u32(p + 16);
    r->routes = spb_u32(p + 20);
    r->contexts = spb_u32(p + 24);
    r->flags = spb_u32(p + 28);
    if (r->flags & ~SPB_SEGMENT_SERIES) return SPB_BAD;
    for (int i = 32; i < SPB_HEADER; i++)
        if (p[i]) return SPB_BAD;
    /* every count costs at least one byte of the record: bounds the sizes below */
    uint64_t n = r->rows, m = r->runs, s = r->series, nr = r->routes, nc = r->contexts;
    if (n > len || m > len || s > len || nr > len || nc > len) return SPB_BAD;
    spb_cursor c = {p, SPB_HEADER, len, 0};
    r->ts = spb_take(&c, n * 8);
    r->ival = spb_take(&c, n * 8);
    r->dval = spb_take(&c, n * 8);
    r->series_of_row = spb_take(&c, n * 4);
    r->datatype = spb_take(&c, n);
    r->kind = spb_take(&c, n);
    r->received = spb_take(&c, m * 8);
    r->seq = spb_take(&c, m * 8);
    r->bdseq = spb_take(&c, m * 8);
    r->bdseq_valid = spb_take(&c, m);
    r->run_rows = spb_take(&c, m * 4);
    r->route = spb_take(&c, m * 4);
    r->context = spb_take(&c, m * 4);
    r->alias = spb_take(&c, s * 8);
    r->alias_valid = spb_take(&c, s);
    if (c.bad) return SPB_BAD;
    if (spb_take_strings(&c, r->series, &r->metric) || spb_take_strings(&c, r->series, &r->unit)) return SPB_BAD;
    r->unmapped = spb_take(&c, nr);
    if (c.bad) return SPB_BAD;
    if (spb_take_strings(&c, r->routes, &r->group) || spb_take_strings(&c, r->routes, &r->edge) ||
        spb_take_strings(&c, r->routes, &r->device) || spb_take_strings(&c, r->routes, &r->path) ||
        spb_take_strings(&c, r->contexts, &r->context_text))
        return SPB_BAD;
    if (c.pos != len) return SPB_BAD;
    for (uint32_t i = 0; i < r->rows; i++)
        if (r->datatype[i] > SPB_MAX_DATATYPE || r->kind[i] > SPB_MAX_KIND) return SPB_BAD;
    if (!spb_flags_ok(r->bdseq_valid, r->runs) || !spb_flags_ok(r->alias_valid, r->series) ||
        !spb_flags_ok(r->unmapped, r->routes))
        return SPB_BAD;
    /* the runs' rows add up to the record's rows; each run names a route and a context */
    uint64_t total = 0;
    for (uint32_t i = 0; i < r->runs; i++) {
        int32_t k = spb_i32(r->run_rows + 4 * (size_t)i);
        if (k < 0) return SPB_BAD;
        total += (uint64_t)k;
    }
    if (total != r->rows) return SPB_BAD;
    if (!spb_ids_ok(r->route, r->runs, r->routes) || !spb_ids_ok(r->context, r->runs, r->contexts)) return SPB_BAD;
    if (!(r->flags & SPB_SEGMENT_SERIES) && !spb_ids_ok(r->series_of_row, r->rows, r->series)) return SPB_BAD;
    return SPB_OK;
}

#endif
