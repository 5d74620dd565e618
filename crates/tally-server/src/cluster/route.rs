//! Which channel a request is about, from its path or its payment (spec/CLUSTER.md §7): the
//! pure decision the routing middleware acts on. Only bytes the client sent are read; nothing
//! is verified here (the owner node verifies everything), so a forged channel id costs one
//! forward at most, to the node that refuses it.

use http::HeaderMap;
use tally_core::ChannelId;
use tally_http::headers::{decode_header, API_PREFIX, PAYMENT_SIGNATURE};
use tally_http::PaymentPayload;

/// The channel a request addresses: `/tally/v1/channels/{id}/…` names it in the path; a paid
/// request names it in its `PAYMENT-SIGNATURE` authorization. `None`: not channel-scoped
/// (terms, health, metrics, the relay, unpaid upstream routes), served by any node.
pub fn channel_of(path: &str, headers: &HeaderMap) -> Option<ChannelId> {
    if let Some(rest) = path
        .strip_prefix(API_PREFIX)
        .and_then(|r| r.strip_prefix("/channels/"))
    {
        let id = rest.split('/').next().unwrap_or_default();
        return ChannelId::from_hex(id).ok();
    }
    let header = headers.get(PAYMENT_SIGNATURE)?;
    let payload: PaymentPayload = decode_header("PAYMENT-SIGNATURE", header.as_bytes()).ok()?;
    payload
        .authorization_and_bytes()
        .ok()
        .map(|(auth, _)| auth.channel_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_channel() {
        let id = ChannelId([7; 32]);
        let path = format!("{API_PREFIX}/channels/{}/records", id.to_hex());
        assert_eq!(channel_of(&path, &HeaderMap::new()), Some(id));
        let bare = format!("{API_PREFIX}/channels/{}", id.to_hex());
        assert_eq!(channel_of(&bare, &HeaderMap::new()), Some(id));
    }

    #[test]
    fn other_paths_and_garbage_name_none() {
        let h = HeaderMap::new();
        assert_eq!(channel_of("/.well-known/tally", &h), None);
        assert_eq!(
            channel_of(&format!("{API_PREFIX}/channels/zz/records"), &h),
            None
        );
        assert_eq!(channel_of("/api/echo", &h), None);
        let mut bad = HeaderMap::new();
        bad.insert(
            PAYMENT_SIGNATURE,
            http::HeaderValue::from_static("not-base64!"),
        );
        assert_eq!(channel_of("/api/echo", &bad), None);
    }
}
