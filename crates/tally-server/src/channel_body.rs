//! A response body fed from a channel: what a task writes, the connection sends, frame by
//! frame, so a response can start before its body exists (a streamed paid response, a
//! token-by-token completion). The task learns that the client left when a send fails.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

/// The sending half: each item is a frame, or an error that ends the body abruptly.
pub type FrameSender<E> = mpsc::Sender<Result<Frame<Bytes>, E>>;

/// A body of the frames sent to it; it ends when every sender is dropped.
pub struct ChannelBody<E>(mpsc::Receiver<Result<Frame<Bytes>, E>>);

/// A body and its sender, buffering at most `frames` frames: a slow reader pushes back on
/// the writer instead of on memory.
pub fn channel_body<E>(frames: usize) -> (FrameSender<E>, ChannelBody<E>) {
    let (tx, rx) = mpsc::channel(frames.max(1));
    (tx, ChannelBody(rx))
}

impl<E> http_body::Body for ChannelBody<E> {
    type Data = Bytes;
    type Error = E;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.0.poll_recv(cx)
    }
}
