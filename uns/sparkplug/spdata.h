/* The native DATA decoder's core: plain C, no Python (the fuzz target links it as is).
 *
 * It reads the Sparkplug B protobuf of an ordinary NDATA/DDATA payload and types each
 * metric's value exactly as uns.sparkplug.payload.METRIC_CONVERTERS would -- or gives up.
 * Giving up is always safe: the caller then hands the bytes to the Python decoder, which
 * either accepts them (an unusual field, a string value, ...) or rejects them with its
 * own reason.  So the rule here is "accept only what is certain": any field outside the
 * common subset, any wire type other than the schema's, any value a converter would
 * refuse or that needs a conversion not written here, is a give-up (SPD_OTHER).
 *
 * Bounds: every read checks the remaining length first; varints longer than 10 bytes,
 * lengths beyond the buffer, more metrics than the caller's capacity all give up.
 */
#ifndef UNS_SPDATA_H
#define UNS_SPDATA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPD_OK 0
#define SPD_OTHER (-1) /* not the common case (or malformed): use the Python path */

/* value kinds of a parsed metric (which oneof member was set) */
enum { SPD_NONE = 0, SPD_U32 = 1, SPD_U64 = 2, SPD_F32 = 3, SPD_F64 = 4, SPD_BOOL = 5 };
/* kinds of a typed value (the row's ``kind`` byte) */
enum { SPD_NULL = 0, SPD_INT = 1, SPD_FLOAT = 2, SPD_BOOLEAN = 3 };

typedef struct {
    const uint8_t *name; /* NULL: no name field */
    size_t name_len;
    uint64_t alias, timestamp, raw; /* raw: the integer value, or the float's bits */
    uint32_t datatype;              /* 0: not stated */
    uint8_t has_alias, has_timestamp, kind;
} spd_metric;

typedef struct {
    uint64_t timestamp, seq;
    uint8_t has_timestamp, has_seq;
    size_t count; /* metrics parsed */
} spd_payload;

static int spd_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return SPD_OTHER;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1) return SPD_OTHER; /* beyond 64 bits: protobuf refuses it */
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return SPD_OK;
        }
    }
    return SPD_OTHER;
}

static int spd_length(const uint8_t **p, const uint8_t *end, size_t *len) {
    uint64_t n;
    if (spd_varint(p, end, &n) != SPD_OK) return SPD_OTHER;
    if (n > (uint64_t)(end - *p)) return SPD_OTHER;
    *len = (size_t)n;
    return SPD_OK;
}

static uint64_t spd_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int spd_parse_metric(const uint8_t *p, const uint8_t *end, spd_metric *m) {
    memset(m, 0, sizeof *m);
    int values = 0;
    while (p < end) {
        uint64_t tag, v;
        if (spd_varint(&p, end, &tag) != SPD_OK) return SPD_OTHER;
        uint64_t field = tag >> 3;
        unsigned wire = (unsigned)(tag & 7);
        switch (field) {
        case 1: /* name */
            if (wire != 2 || spd_length(&p, end, &m->name_len) != SPD_OK) return SPD_OTHER;
            m->name = p;
            /* protobuf checks a name's UTF-8 (an invalid one costs the metric): ASCII needs
               no check; anything else is left to the Python path */
            for (size_t i = 0; i < m->name_len; i++)
                if (p[i] & 0x80) return SPD_OTHER;
            p += m->name_len;
            break;
        case 2: /* alias */
        case 3: /* timestamp */
        case 4: /* datatype */
        case 10: /* int_value (uint32) */
        case 11: /* long_value (uint64) */
        case 14: /* boolean_value */
            if (wire != 0 || spd_varint(&p, end, &v) != SPD_OK) return SPD_OTHER;
            if (field == 2) {
                m->alias = v;
                m->has_alias = 1;
            } else if (field == 3) {
                m->timestamp = v;
                m->has_timestamp = 1;
            } else if (field == 4) {
                if (v > 0xFFFFFFFFu) return SPD_OTHER; /* protobuf would truncate: let it */
                m->datatype = (uint32_t)v;
            } else {
                if (field == 10 && v > 0xFFFFFFFFu) return SPD_OTHER;
                m->kind = field == 10 ? SPD_U32 : field == 11 ? SPD_U64 : SPD_BOOL;
                m->raw = field == 14 ? (v != 0) : v;
                values++;
            }
            break;
        case 12: /* float_value */
            if (wire != 5 || end - p < 4) return SPD_OTHER;
            m->raw = spd_le(p, 4);
            m->kind = SPD_F32;
            p += 4;
            values++;
            break;
        case 13: /* double_value */
            if (wire != 1 || end - p < 8) return SPD_OTHER;
            m->raw = spd_le(p, 8);
            m->kind = SPD_F64;
            p += 8;
            values++;
            break;
        default: /* flags, metadata, properties, strings, bytes, datasets, templates, unknown */
            return SPD_OTHER;
        }
    }
    /* two members of the value oneof: protobuf keeps the last; leave that to it */
    return values > 1 ? SPD_OTHER : SPD_OK;
}

/* Parse a payload into ``out`` and up to ``cap`` metrics; SPD_OTHER for anything else. */
static int spd_parse_payload(const uint8_t *p, size_t len, spd_payload *out, spd_metric *metrics,
                             size_t cap) {
    const uint8_t *end = p + len;
    memset(out, 0, sizeof *out);
    while (p < end) {
        uint64_t tag, v;
        size_t n;
        if (spd_varint(&p, end, &tag) != SPD_OK) return SPD_OTHER;
        uint64_t field = tag >> 3;
        unsigned wire = (unsigned)(tag & 7);
        if ((field == 1 || field == 3) && wire == 0) {
            if (spd_varint(&p, end, &v) != SPD_OK) return SPD_OTHER;
            if (field == 1) {
                out->timestamp = v;
                out->has_timestamp = 1;
            } else {
                out->seq = v;
                out->has_seq = 1;
            }
        } else if (field == 2 && wire == 2) {
            if (spd_length(&p, end, &n) != SPD_OK || out->count >= cap) return SPD_OTHER;
            if (spd_parse_metric(p, p + n, &metrics[out->count]) != SPD_OK) return SPD_OTHER;
            out->count++;
            p += n;
        } else {
            return SPD_OTHER; /* uuid, body, extensions, a wrong wire type */
        }
    }
    return SPD_OK;
}

#define SPD_MAX_CODE 34

/* Type a parsed metric's value as datatype ``dt`` (1..34), as METRIC_CONVERTERS[dt] does
 * to the Python value of the field when ``stated``, else as the born metric's converter
 * (births.FAST_CONVERTERS: the same but for Float, whose float value it keeps unrounded).  Sets kind (SPD_INT/FLOAT/BOOLEAN) and ival or dval;
 * SPD_OTHER when the converter would refuse or the case is not written here. */
static int spd_type_value(uint32_t dt, int stated, const spd_metric *m, uint8_t *kind, int64_t *ival,
                          double *dval) {
    static const int width[] = {0, 8, 16, 32, 64, 8, 16, 32, 64};
    if (m->kind == SPD_U32 || m->kind == SPD_U64) {
        uint64_t raw = m->raw;
        if ((dt >= 1 && dt <= 4) || dt == 13) { /* signed: mask, then the sign bit */
            int w = dt == 13 ? 64 : width[dt];
            uint64_t v = w == 64 ? raw : raw & ((UINT64_C(1) << w) - 1);
            if (w < 64 && (v >> (w - 1))) *ival = (int64_t)v - ((int64_t)1 << w);
            else *ival = (int64_t)v; /* 64 bits: two's complement is the sign correction */
            *kind = SPD_INT;
            return SPD_OK;
        }
        if (dt >= 5 && dt <= 8) { /* unsigned: in range or refused */
            int w = width[dt];
            if (w < 64 && raw > ((UINT64_C(1) << w) - 1)) return SPD_OTHER;
            *ival = (int64_t)raw; /* UInt64 above 2^63 keeps its bits; the datatype says unsigned */
            *kind = SPD_INT;
            return SPD_OK;
        }
        return SPD_OTHER;
    }
    if (m->kind == SPD_F32 || m->kind == SPD_F64) {
        double d;
        if (m->kind == SPD_F32) {
            uint32_t bits = (uint32_t)m->raw;
            float f;
            memcpy(&f, &bits, 4);
            d = (double)f;
        } else {
            uint64_t bits = m->raw;
            memcpy(&d, &bits, 8);
        }
        if (dt == 10 || (dt == 9 && !stated)) {
            /* a born Float's float wire value is taken as it is (births.FAST_CONVERTERS) */
            *dval = d;
        } else if (dt == 9) { /* stated Float: rounded to 32 bits; a finite value beyond it is refused */
            float f = (float)d;
            if (isinf(f) && !isinf(d)) return SPD_OTHER;
            *dval = (double)f;
        } else {
            return SPD_OTHER;
        }
        *kind = SPD_FLOAT;
        return SPD_OK;
    }
    if (m->kind == SPD_BOOL && dt == 11) {
        *ival = (int64_t)m->raw;
        *kind = SPD_BOOLEAN;
        return SPD_OK;
    }
    return SPD_OTHER;
}

/* One row of the decoder's output (32 bytes, little-endian fields). */
typedef struct {
    int64_t ts;
    int64_t ival;
    double dval;
    uint8_t datatype;
    uint8_t kind;
    uint8_t pad[6];
} spd_row;

/* Type metric ``m`` into ``row``: ``born`` is its BIRTH datatype, ``default_ts`` the
 * payload's timestamp (or the receive time).  SPD_OTHER when the Python path must do it. */
static int spd_row_of(const spd_metric *m, uint32_t born, int64_t default_ts, spd_row *row) {
    uint32_t dt = m->datatype ? m->datatype : born;
    memset(row, 0, sizeof *row);
    if (dt == 0 || dt > SPD_MAX_CODE) return SPD_OTHER;
    if (m->has_timestamp) {
        if (m->timestamp > (uint64_t)INT64_MAX) return SPD_OTHER;
        row->ts = (int64_t)m->timestamp;
    } else {
        row->ts = default_ts;
    }
    row->datatype = (uint8_t)dt;
    if (m->kind == SPD_NONE) {
        if (dt == 20 || dt == 21) return SPD_OTHER; /* property-only types: the decoder refuses */
        row->kind = SPD_NULL;
        return SPD_OK;
    }
    return spd_type_value(dt, m->datatype != 0, m, &row->kind, &row->ival, &row->dval);
}

/* The capacity a growing buffer of ``cap`` entries takes to hold ``need`` (doubling from
 * ``initial``): one rule for the extension's growing outputs. */
static size_t spd_grown(size_t cap, size_t need, size_t initial) {
    cap = cap ? cap : initial;
    while (cap < need) cap *= 2;
    return cap;
}

#endif
