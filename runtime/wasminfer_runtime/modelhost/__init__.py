"""Model hosts: the processes where models load and inferences run, apart from the runtime.

A model can then crash, leak or blow up without taking the runtime or other tenants with it.
`supervisor` starts and restarts the processes, `child` is what runs in them, `client` is the
Backend interface the wasi-nn host uses to reach them, `wire` what crosses between them, and
`caps` their memory caps.
"""
