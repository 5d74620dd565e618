//! The hand-written hot paths give exactly the bytes of the serde paths they replace.

use tally_core::encoding::Canonical;
use tally_core::{Authorization, ChannelId, Hash, Outcome, SecretKey};
use tally_http::amount::SignedAmount;
use tally_http::headers::{decode_header, encode_header, network};
use tally_http::payment::{Requirement, ResponseExtra};
use tally_http::terms::{ChainTerms, Price};
use tally_http::{Amount, PaymentPayload, PaymentResponse, WireReceipt};

const PAYER: &str = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4";

fn outcome(seq: u64, amount: i128) -> Outcome {
    Outcome {
        version: tally_core::VERSION,
        channel_id: ChannelId([seq as u8; 32]),
        lane: (seq % 5) as u32,
        seq,
        index: seq.wrapping_mul(3),
        authorization_hash: Hash([0xab; 32]),
        units: [seq / 3, seq % 3, 0, 0],
        amount,
        cumulative: u128::from(seq) * 1000,
        response_hash: Hash([0x01; 32]),
        time_ms: 1_700_000_000_000 + seq / 7,
    }
}

#[test]
fn receipt_header_matches_the_serializer() {
    let key = SecretKey::from_seed(&[4u8; 32]);
    for (seq, amount, chain) in [
        (0u64, 0i128, 1u64),
        (7, -5, 31337),
        (u64::MAX, i128::MAX, 8453),
    ] {
        let o = outcome(seq, amount);
        let receipt = o.sign(&key);
        let slow = encode_header(
            "PAYMENT-RESPONSE",
            &PaymentResponse {
                success: true,
                transaction: String::new(),
                network: network(chain),
                payer: PAYER.into(),
                amount: SignedAmount(amount),
                extra: ResponseExtra {
                    receipt: WireReceipt::from_receipt(&receipt),
                },
            },
        )
        .unwrap();
        let fast = PaymentResponse::receipt_header(
            &network(chain),
            PAYER,
            amount,
            &o.to_bytes(),
            &receipt.signature,
        )
        .unwrap();
        assert_eq!(fast, slow);
        let back: PaymentResponse = decode_header("PAYMENT-RESPONSE", fast.as_bytes()).unwrap();
        assert_eq!(back.extra.receipt.receipt().unwrap(), receipt);
        assert_eq!((back.payer.as_str(), back.amount.0), (PAYER, amount));
    }
    // A network that would need escaping takes the serializer's path.
    let o = outcome(1, 1);
    let receipt = o.sign(&key);
    let odd = "eip155:\"1\"";
    let fast =
        PaymentResponse::receipt_header(odd, PAYER, 1, &o.to_bytes(), &receipt.signature).unwrap();
    let back: PaymentResponse = decode_header("PAYMENT-RESPONSE", fast.as_bytes()).unwrap();
    assert_eq!(back.network, odd);
    let odd_payer = "0x\"5B";
    let fast = PaymentResponse::receipt_header(
        "eip155:1",
        odd_payer,
        1,
        &o.to_bytes(),
        &receipt.signature,
    )
    .unwrap();
    let back: PaymentResponse = decode_header("PAYMENT-RESPONSE", fast.as_bytes()).unwrap();
    assert_eq!(back.payer, odd_payer);
}

#[test]
fn authorization_bytes_are_canonical() {
    let key = SecretKey::from_seed(&[5u8; 32]);
    let auth = Authorization {
        version: tally_core::VERSION,
        channel_id: ChannelId([9; 32]),
        lane: 7,
        seq: 42,
        request_hash: Hash([1; 32]),
        max_amount: 77,
        ack_size: 40,
        ack_root: Hash([2; 32]),
        ack_cumulative: 1234,
        terms_hash: Hash([3; 32]),
    };
    let sig = auth.sign(&key);
    let chain = ChainTerms {
        chain_id: 1,
        contract: "0x01".into(),
        asset: "0x02".into(),
        pay_to: "0x03".into(),
    };
    let price = Price::Fixed { amount: Amount(77) };
    let accepted = Requirement::tally(&chain, key.public(), Hash([3; 32]), &price);
    let p = PaymentPayload::new(accepted, &auth, sig);
    assert_eq!(p.payload.authorization, hex::encode(auth.to_bytes()));
    let (back, bytes) = p.authorization_and_bytes().unwrap();
    assert_eq!(back, auth);
    assert_eq!(bytes, auth.to_bytes());
    // One spelling: upper-case hex is refused (issue 8, item 11).
    let mut upper = p.clone();
    upper.payload.authorization = upper.payload.authorization.to_uppercase();
    assert!(upper.authorization().is_err());
    let mut odd = p.clone();
    odd.payload.authorization.pop();
    assert!(odd.authorization().is_err());
    let mut bad = p;
    bad.payload.authorization.replace_range(0..2, "zz");
    assert!(bad.authorization().is_err());
}
