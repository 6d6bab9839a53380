/* libFuzzer target for the MQTT reader's framing in C (uns/mqtt/wire/mqttrun.h), built and
 * run with AddressSanitizer and UndefinedBehaviorSanitizer by scripts/fuzz.  The input is
 * one socket read's bytes; the run of PUBLISH packets mqr_next accepts is walked as
 * _fastwire.c walks it, every byte it points at is read (so an offset beyond the input is
 * caught), and its framing is checked against the MQTT 3.1.1 layout computed here. */
#include <stdlib.h>

#include "../../uns/mqtt/wire/mqttrun.h"

static volatile uint8_t sink;

static void touch(const uint8_t *data, size_t size, size_t at, size_t n) {
    if (at > size || n > size - at) abort();
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= data[at + i];
    sink = x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t pos = 0;
    mqr_publish p;
    while (mqr_next(data, size, pos, &p)) {
        /* the layout: type 3, QoS 0/1, a 1-2 byte remaining length, topic length, topic,
         * the packet id for QoS 1, the payload to the end */
        if (data[pos] >> 4 != 3 || p.qos != (data[pos] >> 1 & 3u) || p.qos > 1) abort();
        if (p.retain != (data[pos] & 1u)) abort();
        size_t header = data[pos + 1] < 0x80 ? 2 : 3;
        size_t length = header == 2 ? data[pos + 1] : ((size_t)(data[pos + 1] & 0x7F) | (size_t)data[pos + 2] << 7);
        if (p.end != pos + header + length || p.end > size || p.end <= pos) abort();
        if (p.topic != pos + header + 2) abort();
        if (p.topic_len != ((size_t)data[pos + header] << 8 | data[pos + header + 1])) abort();
        if (p.packet_id != p.topic + p.topic_len || p.payload != p.packet_id + (p.qos ? 2 : 0)) abort();
        if (p.payload > p.end) abort();
        touch(data, size, p.topic, p.topic_len);
        if (p.qos) touch(data, size, p.packet_id, 2);
        touch(data, size, p.payload, p.end - p.payload);
        pos = p.end;
    }
    if (pos > size) abort();
    return 0;
}
