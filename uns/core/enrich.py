"""Enrichment: path, unit and context on every sample (pure).

:class:`Enricher` runs once per batch, after the Sparkplug sessions and
before the sinks.  :meth:`~Enricher.enrich`

1. resolves each sample's source to its ISA-95 path (``_unmapped/...`` when
   the plant model does not know it), applies the model's unit and UNS name
   overrides (samples and catalog entries alike, so the lake and the broker
   use the same names);
2. turns samples of context metrics (``Batch/ID`` -> ``batch_id``) into
   :class:`~uns.core.events.ContextChange` entries of the batch and applies them to
   the context store -- before step 3, so a measurement in the same message at
   the same timestamp already carries the new context; a value equal to the
   one the path already holds is not repeated;
3. attaches the context valid at each sample's own timestamp.

:meth:`~Enricher.enrich_steps` does the same in slices (:mod:`uns.sparkplug.steps`),
for the engine's largest messages.

The sinks render what it filled in: the republisher's JSON is in
:mod:`uns.sinks.encoders`, its topic names in :mod:`uns.core.topics`.
"""

from __future__ import annotations

from collections.abc import Mapping

from uns.core.context import ContextStore
from uns.core.events import Batch, CatalogEntry, ContextChange, Sample, SampleBlock, SampleRuns
from uns.core.model import MetricInfo, PlantModel, Resolved
from uns.core.values import value_text
from uns.sparkplug.steps import SLICE, Steps

__all__ = ["Enricher"]


class Enricher:
    """Fills in what the plant model and the context store know about each sample of a batch."""

    __slots__ = ("context", "model")

    def __init__(self, model: PlantModel, context: ContextStore) -> None:
        self.model = model
        self.context = context

    def enrich(self, batch: Batch) -> None:
        """Fill path, unit, UNS name, unmapped and context of every sample (see module doc)."""
        # Hot path (per sample).  Consecutive samples usually share their source (one
        # message), so the source is resolved again only when one of its ids is another
        # object.  The context is asked once per (path, ts) of the batch, so samples of one
        # path and time share one dict object (the lake renders each object once).
        model = self.model
        at = self.context.at
        if batch.blocks:
            self._enrich_blocks(batch)
        samples = batch.samples
        changes_before = len(batch.context)
        _unset = object()
        group: object = _unset
        node: object = _unset
        device: object = _unset
        path, unmapped, has_keys, has_infos = "", False, False, False
        contexts: dict[tuple[str, int], dict[str, str]] = {}
        context_path: str | None = None
        context_ts = 0
        context: dict[str, str] = {}
        for sample in samples:
            if (
                device is not sample.device_id
                or node is not sample.edge_node_id
                or group is not sample.group_id
            ):
                group, node, device = sample.group_id, sample.edge_node_id, sample.device_id
                resolved: Resolved = model.resolve(sample.group_id, sample.edge_node_id, sample.device_id)
                path, unmapped = resolved.path, resolved.unmapped
                has_keys, has_infos = bool(resolved.context_keys), bool(resolved.metrics)
            sample.path = path
            sample.unmapped = unmapped
            if has_keys:
                key = resolved.context_keys.get(sample.metric)
                if key is not None:
                    self._context_metric(sample, key, batch)
            if has_infos:
                _apply_metric_info(sample, resolved.metrics)
            ts = sample.ts
            if ts != context_ts or path is not context_path:
                found = contexts.get((path, ts))
                if found is None:
                    found = contexts[path, ts] = at(path, ts)
                context, context_ts, context_path = found, ts, path
            sample.context = context
        if len(batch.context) != changes_before:
            # a context metric changed the store: the context of every sample is the one
            # after all of the batch's changes (a measurement at the same ts carries it)
            self._recontext(samples, {})
        group = node = device = _unset
        for entry in batch.catalog:
            if entry.device_id is not device or entry.edge_node_id is not node or entry.group_id is not group:
                group, node, device = entry.group_id, entry.edge_node_id, entry.device_id
                resolved = model.resolve(entry.group_id, entry.edge_node_id, entry.device_id)
                path, has_infos = resolved.path, bool(resolved.metrics)
            entry.path = path
            if has_infos:
                _apply_metric_info(entry, resolved.metrics)

    def _enrich_blocks(self, batch: Batch) -> None:
        """Path and context of each block (one source, one ts: one lookup each).  A block
        whose source has context metrics or metric overrides in the model becomes Sample
        objects, enriched one by one like any other."""
        kept: list[SampleBlock | SampleRuns] = []
        for block in batch.blocks:
            if isinstance(block, SampleRuns):  # the dispatcher's lane fills them in itself
                kept.append(block)
                continue
            resolved = self.model.resolve(block.group_id, block.edge_node_id, block.device_id)
            if resolved.context_keys or resolved.metrics:
                batch.samples.extend(block.samples())
                continue
            block.path, block.unmapped = resolved.path, resolved.unmapped
            block.context = self.context.at(resolved.path, block.ts)
            kept.append(block)
        batch.blocks = kept

    def enrich_steps(self, batch: Batch) -> Steps[None]:
        """:meth:`enrich` in slices of :data:`~uns.sparkplug.steps.SLICE` samples and catalog
        entries, with the same result: when a context metric of a later slice changed the
        store, every sample's context is looked up again after the last slice."""
        samples, catalog, changes = batch.samples, batch.catalog, batch.context
        changes_before = len(changes)
        for start in range(0, max(len(samples), len(catalog)), SLICE):
            end = start + SLICE
            self.enrich(Batch(samples=samples[start:end], catalog=catalog[start:end], context=changes))
            yield
        if len(changes) != changes_before:
            contexts: dict[tuple[str, int], dict[str, str]] = {}
            for start in range(0, len(samples), SLICE):
                self._recontext(samples[start : start + SLICE], contexts)
                yield

    def _recontext(self, samples: list[Sample], contexts: dict[tuple[str, int], dict[str, str]]) -> None:
        """The context of each sample looked up again (``contexts``: the answers so far)."""
        at = self.context.at
        for sample in samples:
            found = contexts.get((sample.path, sample.ts))
            if found is None:
                found = contexts[sample.path, sample.ts] = at(sample.path, sample.ts)
            sample.context = found

    def _context_metric(self, sample: Sample, key: str, batch: Batch) -> None:
        value = value_text(sample.value)
        if self.context.value_at(sample.path, key, sample.ts) == value:
            return  # births and periodic reports repeat the value; the history needs it once
        device = f"/{sample.device_id}" if sample.device_id is not None else ""
        change = ContextChange(
            ts=sample.ts,
            received_at=sample.received_at,
            path=sample.path,
            key=key,
            value=value,
            source=f"sparkplug:{sample.group_id}/{sample.edge_node_id}{device}/{sample.metric}",
        )
        self.context.apply(change)
        batch.context.append(change)


def _apply_metric_info(item: Sample | CatalogEntry, infos: Mapping[str, MetricInfo]) -> None:
    """The plant model's display name and unit for the item's metric, if it has any."""
    info = infos.get(item.metric)
    if info is not None:
        item.metric = info.display_name
        if info.unit is not None:
            item.unit = info.unit
