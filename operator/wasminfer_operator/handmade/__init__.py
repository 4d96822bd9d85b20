"""What the operator does without kopf, and why kopf could not do it here.

Everything else runs on kopf: the two custom resources are watched and indexed by `kopf.index`,
their events reach the reconciler through `kopf.on.event`, its events are posted by `kopf.event`,
kopf's login, probes, startup and cleanup handlers run the process, and its stop flag ends it.
Three pieces are hand-made, and one of kopf's is mended:

- `informer`: the caches of the children (Deployments, Services, ConfigMaps, Pods). kopf indexes
  could hold the same compact views, but `bench/operator_scale.py` fills both over the children
  of 1,000 workers, each in a fresh process (`bench/operator_caches.py`): kopf took 16.1 s and
  peaked at 259 MB (it keeps each listed body until every index is filled), these informers 1.3 s
  and 116 MB. The operator's whole budget is 150 MB.
- `workqueue`: one queue of worker and model keys. An event about a child, a pod or a model must
  re-reconcile *another* object (the worker owning it, the workers using it). kopf runs a handler
  for the object whose event it is; the only way to make kopf call a worker's handler is to write
  to the worker (an annotation), one API write per pod event and a diff Argo CD would show. The
  queue also coalesces bursts of events into one reconcile, and holds the delayed visits (fallback
  deadlines, move-back checks, source rechecks, retries with backoff): kopf's timers and daemons
  would put kopf's finalizer on every WasmWorker (a write per object, and a field Argo CD did not
  apply) and run on every replica, standbys included.
- `lease`: leader election. kopf's peering does not elect: replicas of the same priority all
  pause (or all act with `standalone`), and a standby only notices a dead peer after the peering
  lifetime (60 s). The Lease here runs on kopf's event loop, takes over within the lease duration
  (15 s) and is released at once on a clean stop.
- `namespaces`: with namespace patterns kopf skips the listing that opens each watch of the
  namespaces, so a namespace created in that instant (at startup, at every reconnection) would
  not be watched until it next changed; the listing counts here like any other event.
"""
