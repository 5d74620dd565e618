//! Sending a request: retries of the transport, and telling an answer read whole from a
//! stream whose receipt comes at its end (spec/HTTP.md §5.7).

use super::*;

impl Client {
    pub(super) async fn transmit(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Raw, ClientError> {
        match self
            .transmit_answer(method, url, headers, body, false)
            .await?
        {
            Transmitted::Whole(raw) => Ok(raw),
            Transmitted::Stream(_) => Err(ClientError::Protocol("unexpected stream".into())),
        }
    }

    /// Sends with retries; with `stream`, an event stream whose receipt comes at its end
    /// (no `PAYMENT-RESPONSE` header, spec/HTTP.md §5.7) is returned unread.
    pub(super) async fn transmit_answer(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
        stream: bool,
    ) -> Result<Transmitted, ClientError> {
        let mut last = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50u64 << attempt.min(6))).await;
            }
            let sent = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone())
                .body(body.to_vec())
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    if stream && super::stream::streamed(resp.headers()) {
                        return Ok(Transmitted::Stream(resp));
                    }
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => {
                            return Ok(Transmitted::Whole(Raw {
                                status,
                                headers,
                                body,
                            }))
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(
            || ClientError::Http("no attempt made".into()),
            ClientError::from,
        ))
    }
}

/// A response as transmitted: read whole, or a stream left to its reader.
pub(super) enum Transmitted {
    Whole(Raw),
    Stream(reqwest::Response),
}
