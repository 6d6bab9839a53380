/* libFuzzer target for the native DATA decoder's core (uns/sparkplug/spdata.h), built and
 * run with AddressSanitizer and UndefinedBehaviorSanitizer by scripts/fuzz.  The first
 * input byte picks the born datatype every metric gets; the rest is the payload. */
#include <stdlib.h>

#include "../../uns/sparkplug/spdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint32_t born = data[0] % (SPD_MAX_CODE + 2); /* 0..35: out-of-range codes too */
    data++;
    size--;
    size_t cap = size / 2 + 1;
    spd_metric *metrics = malloc(cap * sizeof *metrics);
    if (metrics == NULL) return 0;
    spd_payload payload;
    if (spd_parse_payload(data, size, &payload, metrics, cap) == SPD_OK) {
        if (payload.count > cap) abort();
        for (size_t i = 0; i < payload.count; i++) {
            const spd_metric *m = &metrics[i];
            if (m->name != NULL && (m->name < data || m->name + m->name_len > data + size)) abort();
            spd_row row;
            if (spd_row_of(m, born, 1700000000000, &row) == SPD_OK) {
                if (row.kind > SPD_BOOLEAN || row.datatype == 0 || row.datatype > SPD_MAX_CODE) abort();
                if (row.kind == SPD_BOOLEAN && row.ival != 0 && row.ival != 1) abort();
            }
        }
    }
    free(metrics);
    return 0;
}
