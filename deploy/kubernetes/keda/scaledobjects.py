"""Writes scaledobjects.yaml: a KEDA ScaledObject per stage that scales on the work waiting
for it in Redis Streams.

    .venv/bin/python deploy/kubernetes/keda/scaledobjects.py          # rewrite the file
    .venv/bin/python deploy/kubernetes/keda/scaledobjects.py --check  # exit 1 when stale

Generated, not written by hand, because an ordered topic is spread over one stream per
partition (`partition_stream`, MARIONETTE_PARTITIONS in ../stages/config.yaml) and KEDA's
`redis-streams` trigger reads one stream: a stage gets two triggers per stream of the topics
it works on, one for the consumer group's lag (entries not yet read) and one for its pending
entries (read into a replica's queue or handler, not yet acknowledged: a replica reads up to
MARIONETTE_QUEUE_SIZE entries ahead, so lag alone would miss most of a backlog). The
ScaledObject's formula adds them all up and KEDA keeps `target` of that per replica.
"""

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from contracts.topics import ASR_FINAL, AUDIO_FRAME, CHAT_MESSAGE, POLICY_TOKEN, TTS_CHUNK, Topic
from services.bus.partitions import partition_stream

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "scaledobjects.yaml"
CONFIG = HERE.parent / "stages" / "config.yaml"
TRIGGER_AUTHENTICATION = "marionette-redis"


@dataclass(frozen=True)
class Scaling:
    topics: tuple[Topic[Any], ...]
    """The consumed topics whose backlog is work for this stage (not control or progress)."""
    target: int
    """Entries waiting or in progress per replica that KEDA aims at."""
    why: str


SCALING: dict[str, Scaling] = {
    "asr": Scaling(
        (AUDIO_FRAME,), 100,
        "2 s of one session's 20 ms frames not yet heard: a replica that keeps up holds a few.",
    ),
    "policy": Scaling(
        (ASR_FINAL, CHAT_MESSAGE), 2,
        "a turn being answered and one waiting; a third waits for a new replica.",
    ),
    "tts": Scaling(
        (POLICY_TOKEN,), 80, "a reply's tokens or so: the next sentences wait while one is spoken."
    ),
    "avatar": Scaling((TTS_CHUNK,), 10, "sentences of audio not yet turned into a mouth track."),
    "playback": Scaling(
        (TTS_CHUNK,), 10, "sentences not yet played (a reply's wait while its start plays)."
    ),
}  # fmt: skip


def configured_partitions(config: Path = CONFIG) -> int:
    for document in yaml.safe_load_all(config.read_text()):
        if document["metadata"]["name"] == "marionette-config":
            return int(document["data"]["MARIONETTE_PARTITIONS"])
    raise LookupError(f"no marionette-config ConfigMap in {config}")


def trigger_name(stream: str, kind: str) -> str:
    """A name KEDA's formula can use: `policy.token.{p3}` -> policy_token_p3_lag."""
    return re.sub(r"_+", "_", re.sub(r"\W", "_", stream)).strip("_") + f"_{kind}"


def scaled_object(stage: str, scaling: Scaling, partitions: int) -> dict[str, Any]:
    triggers: list[dict[str, Any]] = []
    for topic in scaling.topics:
        for partition in range(partitions):
            stream = partition_stream(topic.name, partition)
            # lagCount set: KEDA reads XINFO GROUPS's lag; without it, XPENDING's count.
            for kind, count_key in (("lag", "lagCount"), ("pending", "pendingEntriesCount")):
                triggers.append({
                    "type": "redis-streams",
                    "name": trigger_name(stream, kind),
                    "authenticationRef": {"name": TRIGGER_AUTHENTICATION},
                    "metadata": {
                        "stream": stream,
                        "consumerGroup": stage,  # a stage's replicas share one group
                        count_key: str(scaling.target),
                    },
                })  # fmt: skip
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": stage,
            "labels": {
                "app.kubernetes.io/name": "marionette",
                "app.kubernetes.io/component": stage,
            },
        },
        "spec": {
            "scaleTargetRef": {"name": stage},
            # Never 0: a replica must hold the partitions, and a model takes seconds to load.
            "minReplicaCount": 1,
            # One replica per partition at most: another would hold none.
            "maxReplicaCount": partitions,
            "pollingInterval": 5,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Each step down hands partitions over: one replica a minute.
                        "scaleDown": {
                            "stabilizationWindowSeconds": 120,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                },
                "scalingModifiers": {
                    "formula": " + ".join(t["name"] for t in triggers),
                    "target": str(scaling.target),
                    "metricType": "AverageValue",
                },
            },
            "triggers": triggers,
        },
    }


def render(partitions: int) -> str:
    header = [
        "# Generated by deploy/kubernetes/keda/scaledobjects.py from services.bus.partitions",
        f"# ({partitions} partitions: MARIONETTE_PARTITIONS, ../stages/config.yaml). Do not edit.",
        "# Work per replica that each stage is scaled to keep (lag + pending entries):",
    ]
    header += [f"#   {stage}: {s.target}, {s.why}" for stage, s in SCALING.items()]
    documents = [scaled_object(stage, s, partitions) for stage, s in SCALING.items()]
    body: str = yaml.safe_dump_all(documents, sort_keys=False, width=100, explicit_start=True)
    return "\n".join(header) + "\n" + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    text = render(configured_partitions())
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run {Path(__file__).name} again", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
