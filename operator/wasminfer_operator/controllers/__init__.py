"""A controller per kind: `model` reconciles InferenceModels, `worker` WasmWorkers.

Each reads the watch caches (`shared.Indexes`), computes children and status with the pure
functions of `render`, `placement` and `status`, and writes only what differs, through the one
`shared.StatusWriter`. `reconcile.Reconciler` routes events to keys and runs the queue.
"""
