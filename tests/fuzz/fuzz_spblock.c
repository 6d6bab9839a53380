/* libFuzzer target for the packed sample blocks' reader (uns/sparkplug/spblock.h), built
 * and run with AddressSanitizer and UndefinedBehaviorSanitizer by scripts/fuzz.  The input
 * is one record's bytes; whatever spb_parse accepts, every byte it points at is read (so a
 * section beyond the input is caught) and the invariants the joiner relies on are checked. */
#include <stdlib.h>

#include "../../uns/sparkplug/spblock.h"

static volatile uint8_t sink;

static void touch(const uint8_t *data, size_t size, const uint8_t *p, uint64_t n) {
    if (n == 0) return;
    if (p == NULL || p < data || p + n > data + size) abort();
    uint8_t x = 0;
    for (uint64_t i = 0; i < n; i++) x ^= p[i];
    sink = x;
}

static void touch_strings(const uint8_t *data, size_t size, const spb_strings *s, uint32_t k) {
    touch(data, size, s->valid, k);
    touch(data, size, s->offsets, ((uint64_t)k + 1) * 4);
    touch(data, size, s->data, s->bytes);
    if (spb_i32(s->offsets + 4 * (size_t)k) != (int32_t)s->bytes) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spb_record r;
    if (spb_parse(data, size, &r) != SPB_OK) return 0;
    uint64_t n = r.rows, m = r.runs, s = r.series;
    touch(data, size, r.ts, n * 8);
    touch(data, size, r.ival, n * 8);
    touch(data, size, r.dval, n * 8);
    touch(data, size, r.series_of_row, n * 4);
    touch(data, size, r.datatype, n);
    touch(data, size, r.kind, n);
    touch(data, size, r.received, m * 8);
    touch(data, size, r.seq, m * 8);
    touch(data, size, r.bdseq, m * 8);
    touch(data, size, r.bdseq_valid, m);
    touch(data, size, r.run_rows, m * 4);
    touch(data, size, r.route, m * 4);
    touch(data, size, r.context, m * 4);
    touch(data, size, r.alias, s * 8);
    touch(data, size, r.alias_valid, s);
    touch(data, size, r.unmapped, r.routes);
    touch_strings(data, size, &r.metric, r.series);
    touch_strings(data, size, &r.unit, r.series);
    touch_strings(data, size, &r.group, r.routes);
    touch_strings(data, size, &r.edge, r.routes);
    touch_strings(data, size, &r.device, r.routes);
    touch_strings(data, size, &r.path, r.routes);
    touch_strings(data, size, &r.context_text, r.contexts);
    uint64_t total = 0;
    for (uint32_t i = 0; i < r.runs; i++) {
        int32_t k = spb_i32(r.run_rows + 4 * (size_t)i), route = spb_i32(r.route + 4 * (size_t)i);
        int32_t context = spb_i32(r.context + 4 * (size_t)i);
        if (k < 0 || route < 0 || (uint32_t)route >= r.routes || context < 0 || (uint32_t)context >= r.contexts)
            abort();
        total += (uint64_t)k;
    }
    if (total != r.rows) abort();
    return 0;
}
