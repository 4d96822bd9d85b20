"""The WASI-NN host: the `wasi_ephemeral_nn` imports, backed by `wasminfer_runtime.backends`."""
