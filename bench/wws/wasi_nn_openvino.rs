//! wasi-nn's OpenVINO backend for the reference wws 1.7.0 (wasmtime-wasi-nn 13), written for the
//! OpenVINO 2.0 C API through the `openvino` crate 0.11 (library loaded at run time).
//!
//! bench/wws/build.sh (WWS_WASI_NN=1) puts this file in place of the crate's
//! src/backend/openvino.rs. The crate's own backend uses `openvino` 0.5, whose C API
//! (`ie_core_create`, CNNNetwork, Blob) is gone from OpenVINO >= 2024, so a worker's first
//! wasi-nn call failed. This one keeps what wasmtime-wasi-nn 13 does for a guest:
//!   - two builders, XML then weights, compiled for CPU or GPU (TPU is refused);
//!   - every input is read as NHWC: the guest gives the dimensions in N, C, H, W order and the
//!     bytes interleaved (N, H, W, C in memory), as the crate's `Layout::NHWC` blob did; they
//!     are reordered here into the model's N, C, H, W tensor; an input without 4 dimensions is
//!     refused, as the crate's NHWC tensor description refused it;
//!   - an output is copied as the model produces it; a guest buffer too small is an error.
//! Everything the OpenVINO library reports comes back to the guest as a wasi-nn error.

use super::{BackendError, BackendExecutionContext, BackendFromDir, BackendGraph, BackendInner};
use crate::wit::types::{ExecutionTarget, GraphEncoding, Tensor, TensorType};
use crate::{ExecutionContext, Graph};
use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, Shape};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The OpenVINO core, made on the first load so that a missing library only fails wasi-nn users.
#[derive(Default)]
pub struct OpenvinoBackend {
    core: Option<Core>,
}

// `Core` is Send but not Sync; this backend only touches it through `&mut self` (load), so no
// two threads use it at once.
unsafe impl Sync for OpenvinoBackend {}

impl BackendInner for OpenvinoBackend {
    fn encoding(&self) -> GraphEncoding {
        GraphEncoding::Openvino
    }

    fn load(&mut self, builders: &[&[u8]], target: ExecutionTarget) -> Result<Graph, BackendError> {
        let &[xml, weights] = builders else {
            return Err(BackendError::InvalidNumberOfBuilders(2, builders.len()));
        };
        let device = device_for(target)?;
        if self.core.is_none() {
            self.core = Some(Core::new().map_err(failure)?);
        }
        let core = self.core.as_mut().expect("core made above");
        let weights_tensor = if weights.is_empty() {
            None
        } else {
            let shape = Shape::new(&[weights.len() as i64]).map_err(failure)?;
            let mut tensor = openvino::Tensor::new(ElementType::U8, &shape).map_err(failure)?;
            tensor.get_raw_data_mut().map_err(failure)?.copy_from_slice(weights);
            Some(tensor)
        };
        let model = core.read_model_from_buffer(xml, weights_tensor.as_ref()).map_err(failure)?;
        let compiled = core.compile_model(&model, device).map_err(failure)?;
        let graph: Box<dyn BackendGraph> = Box::new(OpenvinoGraph(Arc::new(Mutex::new(compiled))));
        Ok(graph.into())
    }

    fn as_dir_loadable(&mut self) -> Option<&mut dyn BackendFromDir> {
        Some(self)
    }
}

impl BackendFromDir for OpenvinoBackend {
    // A preloaded model is a folder holding model.xml and model.bin.
    fn load_from_dir(&mut self, dir: &Path, target: ExecutionTarget) -> Result<Graph, BackendError> {
        let xml = std::fs::read(dir.join("model.xml")).map_err(failure)?;
        let weights = std::fs::read(dir.join("model.bin")).map_err(failure)?;
        self.load(&[&xml, &weights], target)
    }
}

/// A compiled model; each execution context gets its own infer request from it.
struct OpenvinoGraph(Arc<Mutex<CompiledModel>>);

impl BackendGraph for OpenvinoGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let request = self.0.lock().unwrap().create_infer_request().map_err(failure)?;
        let context: Box<dyn BackendExecutionContext> = Box::new(OpenvinoExecutionContext(request));
        Ok(context.into())
    }
}

struct OpenvinoExecutionContext(InferRequest);

impl BackendExecutionContext for OpenvinoExecutionContext {
    fn set_input(&mut self, index: u32, tensor: &Tensor) -> Result<(), BackendError> {
        let element = element_type_for(tensor.tensor_type);
        let width = element_width(tensor.tensor_type);
        let &[n, c, h, w] = tensor.dimensions.as_slice() else {
            return Err(message(format!(
                "input {index}: an NHWC input needs 4 dimensions, got {:?}",
                tensor.dimensions
            )));
        };
        let dims = [n as usize, c as usize, h as usize, w as usize];
        let expected = dims.iter().product::<usize>() * width;
        if tensor.data.len() != expected {
            return Err(message(format!(
                "input {index}: {} bytes for dimensions {:?} of {width}-byte elements (needs {expected})",
                tensor.data.len(),
                tensor.dimensions
            )));
        }
        let shape = Shape::new(&dims.map(|d| d as i64)).map_err(failure)?;
        let mut input = openvino::Tensor::new(element, &shape).map_err(failure)?;
        nhwc_into_nchw(&tensor.data, input.get_raw_data_mut().map_err(failure)?, dims, width);
        self.0.set_input_tensor_by_index(index as usize, &input).map_err(failure)?;
        Ok(())
    }

    fn compute(&mut self) -> Result<(), BackendError> {
        self.0.infer().map_err(failure)?;
        Ok(())
    }

    fn get_output(&mut self, index: u32, destination: &mut [u8]) -> Result<u32, BackendError> {
        let output = self.0.get_output_tensor_by_index(index as usize).map_err(failure)?;
        let bytes = output.get_raw_data().map_err(failure)?;
        if bytes.len() > destination.len() {
            return Err(BackendError::NotEnoughMemory(bytes.len()));
        }
        destination[..bytes.len()].copy_from_slice(bytes);
        Ok(bytes.len() as u32)
    }
}

/// Copies interleaved elements (N, H, W, C in memory) into planar order (N, C, H, W);
/// `dims` is [n, c, h, w] and `width` the size of one element in bytes.
fn nhwc_into_nchw(src: &[u8], dst: &mut [u8], dims: [usize; 4], width: usize) {
    let [n, c, h, w] = dims;
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                let pixel = ((b * h + y) * w + x) * c;
                for ch in 0..c {
                    let from = (pixel + ch) * width;
                    let to = (((b * c + ch) * h + y) * w + x) * width;
                    dst[to..to + width].copy_from_slice(&src[from..from + width]);
                }
            }
        }
    }
}

fn device_for(target: ExecutionTarget) -> Result<DeviceType<'static>, BackendError> {
    match target {
        ExecutionTarget::Cpu => Ok(DeviceType::CPU),
        ExecutionTarget::Gpu => Ok(DeviceType::GPU),
        ExecutionTarget::Tpu => Err(message("OpenVINO has no TPU execution target".into())),
    }
}

fn element_type_for(tensor_type: TensorType) -> ElementType {
    match tensor_type {
        TensorType::Fp16 => ElementType::F16,
        TensorType::Fp32 => ElementType::F32,
        TensorType::U8 => ElementType::U8,
        TensorType::I32 => ElementType::I32,
        TensorType::Bf16 => ElementType::Bf16,
    }
}

fn element_width(tensor_type: TensorType) -> usize {
    match tensor_type {
        TensorType::U8 => 1,
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
    }
}

fn failure(error: impl std::error::Error + Send + Sync + 'static) -> BackendError {
    BackendError::BackendAccess(anyhow::Error::new(error))
}

fn message(text: String) -> BackendError {
    BackendError::BackendAccess(anyhow::anyhow!(text))
}
