/* The framing of one MQTT 3.1.1 PUBLISH, plain C (no Python): the part of
 * uns.mqtt.wire._fastwire that reads untrusted bytes, kept apart so that libFuzzer can
 * run it under AddressSanitizer (tests/fuzz/fuzz_mqttrun.c, scripts/fuzz). */
#ifndef UNS_MQTTRUN_H
#define UNS_MQTTRUN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t end;         /* the position after the packet */
    size_t topic;       /* the topic's bytes: [topic, topic + topic_len) */
    size_t topic_len;
    size_t payload;     /* the payload: [payload, end) */
    size_t packet_id;   /* QoS 1: the two bytes of the packet id at this position */
    unsigned qos;       /* 0 or 1 */
    unsigned retain;    /* 0 or 1 */
} mqr_publish;

/* 1 and *out when buf[pos:n] starts with a complete QoS 0 or 1 PUBLISH whose remaining
 * length takes one or two bytes and whose topic and packet id fit in it; 0 for anything
 * else (incomplete, another type, QoS 2, a longer length, a malformed one), which the
 * caller leaves to the Python loop.  Every offset in *out lies within [pos, n]. */
static int mqr_next(const uint8_t *buf, size_t n, size_t pos, mqr_publish *out) {
    if (pos > n || n - pos < 2) return 0;
    unsigned first = buf[pos];
    unsigned qos = first >> 1 & 3;
    if (first >> 4 != 3 || qos > 1) return 0;
    size_t start, length;
    if (buf[pos + 1] < 0x80) {
        start = pos + 2;
        length = buf[pos + 1];
    } else if (n - pos >= 3 && buf[pos + 2] < 0x80) {
        start = pos + 3;
        length = (size_t)(buf[pos + 1] & 0x7F) | (size_t)buf[pos + 2] << 7;
    } else {
        return 0;
    }
    if (length < 2 || length > n - start) return 0;
    size_t end = start + length;
    size_t topic_len = (size_t)buf[start] << 8 | buf[start + 1];
    size_t topic_end = start + 2 + topic_len;
    size_t payload = qos ? topic_end + 2 : topic_end;
    if (payload > end) return 0;
    out->end = end;
    out->topic = start + 2;
    out->topic_len = topic_len;
    out->payload = payload;
    out->packet_id = topic_end;
    out->qos = qos;
    out->retain = first & 1;
    return 1;
}

#endif
