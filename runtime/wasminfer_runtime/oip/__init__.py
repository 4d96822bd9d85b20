"""The Open Inference Protocol (KServe v2): `types` (requests, responses, tensors), `dataplane`
(what a model server answers), and the transports over them (`rest`, `grpc_server` with the
messages of `grpc_schema`)."""
