//! A chunk's bytes, piece by piece: its own range of one input and, for a chunk packed from
//! small inputs, each of those whole, read a few at a time.

use std::sync::Arc;

use crate::backends::bucket;
use crate::batch::job::JobRun;
use crate::error::Result;
use crate::input::plan::{Chunk, Piece};
use crate::model::config::Compression;

/// A piece's bytes: from its resume point when its input is compressed and the plan has one
/// (only the piece's own part of the stream is decoded), else by range.
async fn read_piece(run: &Arc<JobRun>, piece: &Piece) -> Result<bytes::Bytes> {
    let input = &run.plan.inputs[piece.input as usize];
    let store = run.engine.inputs.clone();
    if input.plain_copy {
        return run.objects.plain_copy_range(piece.input, piece.start, piece.end).await;
    }
    match &piece.resume {
        Some(resume) if !matches!(input.object.compression, Compression::None | Compression::Auto) => {
            let window = match resume.point.window_len {
                0 => bytes::Bytes::new(),
                len => run.objects.window(piece.input, resume.point.window_at, len).await?,
            };
            bucket::read_resumed(store, &input.object, resume, window, piece.start, piece.end).await
        }
        _ => bucket::read_range(store, &input.object, piece.start, piece.end).await,
    }
}

/// Inputs of a packed chunk read at once.
const PIECE_READS: usize = 16;

/// Every piece of a chunk with its bytes, in order (the small inputs of a packed chunk read
/// `PIECE_READS` (16) at a time).
pub async fn read_chunk(run: &Arc<JobRun>, chunk: &Chunk) -> Result<Vec<(Piece, bytes::Bytes)>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(chunk.pieces())
        .map(|piece| async move { read_piece(run, &piece).await.map(|bytes| (piece, bytes)) })
        .buffered(PIECE_READS)
        .try_collect()
        .await
}
