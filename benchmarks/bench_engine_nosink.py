"""The engine alone (no lake, no republish) against the load generator: messages/s,
metrics/s and CPU.  Usage: python -m benchmarks.bench_engine_nosink [--rate 40000] [--duration 15]

Starts a private mosquitto, ``uns run`` with ``UNS_LAKE=`` and republish off, and
``benchmarks.loadgen`` (the simulator's bench plant naming: 10 nodes x 10 devices,
10 metrics per DDATA).  The engine's counters come from its status document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from uns.mqtt.mosquitto import running_mosquitto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=40_000, help="offered metrics/s")
    ap.add_argument("--duration", type=float, default=15.0)
    args = ap.parse_args()
    with running_mosquitto() as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNS_")}
        env.update(
            UNS_BROKER=broker.url,
            UNS_LAKE="",
            UNS_REPUBLISH_ENABLED="false",
            UNS_HOST_ID="bench",
            UNS_ENGINE_STATUS_INTERVAL="0.25",
        )
        engine = subprocess.Popen([sys.executable, "-m", "uns", "run"], env=env, stderr=subprocess.DEVNULL)
        status: dict[str, object] = {}

        def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
            status.update(json.loads(msg.payload))

        sub = mqtt.Client(CallbackAPIVersion.VERSION2)
        sub.on_message = on_message
        sub.connect(broker.host, broker.port)
        sub.subscribe("uns/v1/_engine/bench/status")
        sub.loop_start()
        while not status:
            time.sleep(0.1)
        proc = psutil.Process(engine.pid)
        cpu0 = proc.cpu_times()
        counters0 = dict(status["counters"])  # type: ignore[call-overload]
        t0 = time.monotonic()
        gen = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.loadgen",
                "--port",
                str(broker.port),
                "--rate",
                str(args.rate),
                "--duration",
                str(args.duration),
            ],
            capture_output=True,
            check=False,
        )
        # wait until the engine has caught up (its counter stops moving)
        last = -1
        while status["counters"]["metrics"] != last:  # type: ignore[index]
            last = status["counters"]["metrics"]  # type: ignore[index]
            time.sleep(1.0)
        elapsed = time.monotonic() - t0 - 1.0
        cpu1 = proc.cpu_times()
        counters1 = status["counters"]
        engine.terminate()
        engine.wait(30)
        sub.loop_stop()
        msgs = counters1["messages"] - counters0["messages"]  # type: ignore[index]
        metrics = counters1["metrics"] - counters0["metrics"]  # type: ignore[index]
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        print(
            json.dumps(
                {
                    "offered_metrics_per_s": args.rate,
                    "duration_s": args.duration,
                    "generator_rc": gen.returncode,
                    "engine_messages": msgs,
                    "engine_metrics": metrics,
                    "elapsed_s": round(elapsed, 1),
                    "messages_per_s": round(msgs / elapsed),
                    "metrics_per_s": round(metrics / elapsed),
                    "engine_cpu_s": round(cpu, 1),
                    "cpu_s_per_million_metrics": round(cpu / metrics * 1e6, 1),
                    "engine_cpu_share_of_one_core": round(cpu / elapsed, 2),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
