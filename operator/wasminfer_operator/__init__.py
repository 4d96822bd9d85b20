"""WasmInfer operator: reconciles InferenceModel and WasmWorker into runtime pods."""

__version__ = "0.1.0"
