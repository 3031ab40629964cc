//! The push request signature: `X-Ironflow-Signature: t=<unix>,v1=<hex HMAC-SHA256(key,
//! "<t>." + body)>`, as ironflow-py's `serve` verifies it.

use sha2::{Digest, Sha256};

/// HMAC (RFC 2104) over a hash with 64-byte blocks (SHA-256, SHA-1).
pub fn hmac<H: Digest>(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest = H::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = H::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = H::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// HMAC-SHA256.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&hmac::<Sha256>(key, message));
    out
}

/// The header value for `body` signed with `key` at Unix time `ts`.
pub fn sign(body: &[u8], key: &str, ts: i64) -> String {
    let mut message = format!("{ts}.").into_bytes();
    message.extend_from_slice(body);
    format!(
        "t={ts},v1={}",
        hex::encode(hmac_sha256(key.as_bytes(), &message))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hex::encode(hmac::<sha1::Sha1>(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaa_u8; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn header_has_the_sdk_shape() {
        let h = sign(b"{}", "k", 1_700_000_000);
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
    }
}
