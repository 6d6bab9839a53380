-- The effective context over time, per context path q (a path that sets context itself):
-- one row per instant at which any context that applies to q changes, with the effective
-- value of each context column and the JSON object of every effective key.
--
-- The rules (those of the engine's ContextStore): a key set on a path applies below it
-- unless a deeper path sets it; a clear (value NULL) removes only that path's own value;
-- an empty value hides the key.  measurements_asof and the batch views both read this.
CREATE OR REPLACE VIEW _uns_context_timeline AS
WITH ctx_paths AS (SELECT DISTINCT path FROM _uns_context_changes),
ctx_anc AS (  -- each context path with its ancestors-or-self among the context paths
    SELECT q.path AS q, a.path AS a, length(a.path) AS depth
    FROM ctx_paths q JOIN ctx_paths a ON q.path = a.path OR starts_with(q.path, a.path || '/')
),
changes AS (SELECT DISTINCT an.q, x.ts FROM _uns_context_changes x JOIN ctx_anc an ON x.path = an.a),
pairs AS (SELECT DISTINCT path, key FROM _uns_context_changes),
grid AS (
    SELECT ch.q, ch.ts, an.a, an.depth, p.key
    FROM changes ch JOIN ctx_anc an ON an.q = ch.q JOIN pairs p ON p.path = an.a
),
state AS (  -- the value each ancestor holds at each change instant (NULL: cleared)
    SELECT g.q, g.ts, g.key, g.depth, x.value
    FROM grid g ASOF JOIN _uns_context_changes x ON x.path = g.a AND x.key = g.key AND x.ts <= g.ts
),
effective AS (  -- the deepest set value wins; an empty value hides the key
    SELECT q, ts, key, nullif(arg_max(value, depth), '') AS value
    FROM state WHERE value IS NOT NULL GROUP BY q, ts, key
)
SELECT ch.q, ch.ts,
    max(e.value) FILTER (WHERE e.key = 'batch_id') AS "batch_id",
    max(e.value) FILTER (WHERE e.key = 'order_id') AS "order_id",
    max(e.value) FILTER (WHERE e.key = 'product') AS "product",
    max(e.value) FILTER (WHERE e.key = 'recipe') AS "recipe",
    max(e.value) FILTER (WHERE e.key = 'phase') AS "phase",
    CAST(to_json(map_from_entries(
        list(struct_pack(k := e.key, v := e.value) ORDER BY e.key) FILTER (WHERE e.value IS NOT NULL)
    )) AS VARCHAR) AS context
FROM changes ch LEFT JOIN effective e ON e.q = ch.q AND e.ts = ch.ts
GROUP BY ch.q, ch.ts
