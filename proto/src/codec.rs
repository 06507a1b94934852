//! The gRPC codec of every Conclave API: prost's encoding, with first
//! encoding and decoding buffers of 256 bytes instead of tonic's 8 KiB.
//!
//! Why: a response stream keeps its encoding buffer for as long as it is
//! open, and a homeserver holds one Subscribe stream per connected device, so
//! tonic's 8 KiB was most of an idle stream's cost (BENCHMARKS.md, "memory per
//! stream" and "live heap per idle stream"). A buffer grows to the message
//! it encodes, and an idle stream keeps about the size of the last event it
//! sent (a few hundred bytes for a text message) rather than the first
//! buffer's; the few extra reallocations of a larger message cost far less
//! than its encoding.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// First size of a call's encoding and decoding buffers.
const BUFFER_SIZE: usize = 256;
/// How much encoded data a stream gathers before handing it to the transport
/// (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost's codec with Conclave's buffer sizes; the generated clients and
/// servers use it (`build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ConclaveCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for ConclaveCodec<T, U> {
    fn default() -> Self {
        ConclaveCodec {
            _types: PhantomData,
        }
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for ConclaveCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
