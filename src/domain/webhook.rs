//! Webhook sources as pure rules: a provider's signature scheme as configuration
//! (`VerifyConfig`: GitHub's, Stripe's, Shopify's, Slack's and Standard Webhooks' are all field
//! values; Standard Webhooks' base64 `whsec_` secrets are not decoded, so not yet), its check
//! when saved, verifying a delivery against the current and previous secret,
//! and where a delivery's event name and id live.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::domain::signature::hmac;

/// How a source's deliveries are signed. The default (all empty) is the legacy scheme: a hex
/// HMAC-SHA256 of the bare body in `verify_header` (an `algo=` prefix is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyConfig {
    #[serde(default)]
    pub signature_header: String,
    #[serde(default)]
    pub entry_separator: String,
    #[serde(default)]
    pub kv_delimiter: String,
    #[serde(default)]
    pub signature_key: String,
    #[serde(default)]
    pub timestamp_header: String,
    #[serde(default)]
    pub timestamp_key: String,
    #[serde(default)]
    pub signing_template: String,
    #[serde(default)]
    pub encoding: String,
    #[serde(default)]
    pub algorithm: String,
    #[serde(default)]
    pub tolerance_seconds: i32,
    #[serde(default)]
    pub event_name_path: String,
    #[serde(default)]
    pub dedup_id_path: String,
}

impl VerifyConfig {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body; event and delivery id in headers.
    pub fn github() -> Self {
        Self {
            signature_header: "X-Hub-Signature-256".into(),
            kv_delimiter: "=".into(),
            signature_key: "sha256".into(),
            signing_template: "{body}".into(),
            encoding: "hex".into(),
            algorithm: "hmac-sha256".into(),
            event_name_path: "header:X-GitHub-Event".into(),
            dedup_id_path: "header:X-GitHub-Delivery".into(),
            ..Self::default()
        }
    }

    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>` over `"<t>.<body>"`, five minutes' tolerance.
    pub fn stripe() -> Self {
        Self {
            signature_header: "Stripe-Signature".into(),
            entry_separator: ",".into(),
            kv_delimiter: "=".into(),
            signature_key: "v1".into(),
            timestamp_key: "t".into(),
            signing_template: "{ts}.{body}".into(),
            encoding: "hex".into(),
            algorithm: "hmac-sha256".into(),
            tolerance_seconds: 300,
            event_name_path: "body:type".into(),
            dedup_id_path: "body:id".into(),
            ..Self::default()
        }
    }

    /// Refuses what could never verify, or would verify less than it claims.
    pub fn validate(&self) -> Result<(), String> {
        if self.signature_header.trim().is_empty() {
            return Err("verify_config.signature_header is required".into());
        }
        if !matches!(self.encoding.as_str(), "" | "hex" | "base64") {
            return Err(format!(
                "verify_config.encoding must be \"hex\" or \"base64\" (got {:?})",
                self.encoding
            ));
        }
        if !matches!(self.algorithm.as_str(), "" | "hmac-sha256" | "hmac-sha1") {
            return Err(format!(
                "verify_config.algorithm must be \"hmac-sha256\" or \"hmac-sha1\" (got {:?})",
                self.algorithm
            ));
        }
        if self.tolerance_seconds < 0 {
            return Err("verify_config.tolerance_seconds must not be negative".into());
        }
        if self.tolerance_seconds > 0 && !self.signing_template.contains("{ts}") {
            return Err("verify_config.tolerance_seconds needs a signing_template with {ts}: an unsigned timestamp proves nothing".into());
        }
        if self.signing_template.contains("{ts}")
            && self.timestamp_header.is_empty()
            && self.timestamp_key.is_empty()
        {
            return Err(
                "verify_config.signing_template uses {ts} but neither timestamp_header nor timestamp_key says where it is"
                    .into(),
            );
        }
        for (field, path) in [
            ("event_name_path", &self.event_name_path),
            ("dedup_id_path", &self.dedup_id_path),
        ] {
            if !path.is_empty() && !path.starts_with("header:") && !path.starts_with("body:") {
                return Err(format!(
                    "verify_config.{field} must start with \"header:\" or \"body:\" (got {path:?})"
                ));
            }
        }
        Ok(())
    }
}

/// A delivery as it arrived: headers by lower-case name, and the body.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

impl Delivery<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(self.body).ok()
    }

    /// A `header:<name>` or `body:<dotted path>` value as text.
    pub fn resolve(&self, path: &str) -> Option<String> {
        if let Some(name) = path.strip_prefix("header:") {
            return self.header(name).map(str::to_owned);
        }
        let path = path.strip_prefix("body:")?;
        let json = self.json()?;
        match path.split('.').try_fold(&json, |v, k| v.get(k))? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// The event type: the config's path, else the body's `type`.
    pub fn event_type(&self, config: Option<&VerifyConfig>) -> Option<String> {
        match config
            .map(|c| c.event_name_path.as_str())
            .filter(|p| !p.is_empty())
        {
            Some(path) => self.resolve(path),
            None => self.resolve("body:type"),
        }
    }

    /// The provider's delivery id: the config's path, else the body's `id` or `event_id`.
    pub fn dedup_id(&self, config: Option<&VerifyConfig>) -> Option<String> {
        match config
            .map(|c| c.dedup_id_path.as_str())
            .filter(|p| !p.is_empty())
        {
            Some(path) => self.resolve(path),
            None => self
                .resolve("body:id")
                .or_else(|| self.resolve("body:event_id")),
        }
    }
}

/// Which secret verified a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    Previous,
    /// The source verifies nothing (no secret set).
    Unsigned,
}

impl SecretSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "prev",
            Self::Unsigned => "none",
        }
    }
}

/// What a check found, for the answer and for `TestWebhookVerifyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    pub signing_string: String,
    pub computed_signature: String,
    pub presented: Vec<String>,
    pub timestamp: Option<String>,
    pub error: Option<String>,
}

/// The outcome of verifying a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub slot: Option<SecretSlot>,
    pub check: Check,
}

/// Verifies a delivery with the source's secrets (current first, then the previous one while
/// its grace lasts). No secret: the source is unsigned and every delivery passes as `none`.
pub fn verify(
    config: Option<&VerifyConfig>,
    (legacy_header, legacy_algorithm): (&str, &str),
    delivery: &Delivery<'_>,
    secrets: &[(SecretSlot, &str)],
    now_secs: i64,
) -> Verified {
    if secrets.is_empty() {
        return Verified {
            slot: Some(SecretSlot::Unsigned),
            check: Check::default(),
        };
    }
    let legacy;
    let legacy_prefixes = config.is_none();
    let config = match config {
        Some(c) => c,
        None => {
            legacy = legacy_config(legacy_header, legacy_algorithm);
            &legacy
        }
    };
    let mut check = Check::default();
    let Some(header) = delivery.header(&config.signature_header) else {
        check.error = Some(format!(
            "the signature header {} is missing",
            config.signature_header
        ));
        return Verified { slot: None, check };
    };
    let entries: Vec<&str> = if config.entry_separator.is_empty() {
        vec![header.trim()]
    } else {
        header
            .split(config.entry_separator.as_str())
            .map(str::trim)
            .collect()
    };
    let mut timestamp: Option<String> = None;
    for entry in &entries {
        if config.kv_delimiter.is_empty() {
            // A bare signature (base64 ones end in `=`, so nothing is split off), or the legacy
            // hex form with a `sha256=` / `sha1=` prefix.
            let value = if legacy_prefixes {
                ["sha256=", "sha1="]
                    .iter()
                    .find_map(|p| entry.strip_prefix(p))
                    .unwrap_or(entry)
            } else {
                entry
            };
            check.presented.push(value.to_owned());
            continue;
        }
        let Some((key, value)) = entry.split_once(config.kv_delimiter.as_str()) else {
            continue;
        };
        if key == config.signature_key {
            check.presented.push(value.to_owned());
        }
        if !config.timestamp_key.is_empty() && key == config.timestamp_key {
            timestamp = Some(value.to_owned());
        }
    }
    if !config.timestamp_header.is_empty() {
        timestamp = delivery.header(&config.timestamp_header).map(str::to_owned);
    }
    check.timestamp.clone_from(&timestamp);
    let template = if config.signing_template.is_empty() {
        "{body}"
    } else {
        &config.signing_template
    };
    if template.contains("{ts}") && timestamp.is_none() {
        check.error = Some("the delivery carries no timestamp".into());
        return Verified { slot: None, check };
    }
    let id = delivery.dedup_id(Some(config)).unwrap_or_default();
    let signed = fill_template(
        template,
        timestamp.as_deref().unwrap_or_default(),
        &id,
        delivery.body,
    );
    check.signing_string = String::from_utf8_lossy(&signed).into_owned();
    if config.tolerance_seconds > 0 {
        let Some(ts) = timestamp.as_deref().and_then(|t| t.parse::<i64>().ok()) else {
            check.error = Some("the delivery's timestamp is not a Unix time".into());
            return Verified { slot: None, check };
        };
        let off = now_secs.abs_diff(ts);
        if off > u64::try_from(config.tolerance_seconds).unwrap_or(0) {
            check.error = Some(format!(
                "the delivery's timestamp is {off} s away from now; the tolerance is {} s",
                config.tolerance_seconds
            ));
            return Verified { slot: None, check };
        }
    }
    for (slot, secret) in secrets {
        let mac = mac(&config.algorithm, secret.as_bytes(), &signed);
        let computed = match config.encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD.encode(&mac),
            _ => hex::encode(&mac),
        };
        let matched = check
            .presented
            .iter()
            .any(|p| constant_time_eq(p.trim().as_bytes(), computed.as_bytes()));
        if *slot == SecretSlot::Current {
            check.computed_signature.clone_from(&computed);
        }
        if matched {
            return Verified {
                slot: Some(*slot),
                check,
            };
        }
    }
    check.error = Some(if check.presented.is_empty() {
        format!(
            "the signature header {} holds no signature",
            config.signature_header
        )
    } else {
        "no signature matches".to_owned()
    });
    Verified { slot: None, check }
}

/// The bytes a provider signs: the template with `{ts}`, `{id}` and `{body}` filled in one pass
/// (a placeholder inside a filled value stays text), the body byte for byte.
fn fill_template(template: &str, ts: &str, id: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + body.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let after = &rest[start..];
        let (value, len): (&[u8], usize) = if after.starts_with("{body}") {
            (body, 6)
        } else if after.starts_with("{ts}") {
            (ts.as_bytes(), 4)
        } else if after.starts_with("{id}") {
            (id.as_bytes(), 4)
        } else {
            (b"{", 1)
        };
        out.extend_from_slice(value);
        rest = &after[len..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

/// The legacy scheme: a hex HMAC of the bare body in `verify_header`, SHA-256 unless the
/// source's `verify_algorithm` names SHA-1.
fn legacy_config(header: &str, algorithm: &str) -> VerifyConfig {
    VerifyConfig {
        signature_header: if header.is_empty() {
            "X-Hub-Signature-256".into()
        } else {
            header.into()
        },
        signing_template: "{body}".into(),
        algorithm: if algorithm.to_ascii_lowercase().contains("sha1") {
            "hmac-sha1".into()
        } else {
            "hmac-sha256".into()
        },
        encoding: "hex".into(),
        ..VerifyConfig::default()
    }
}

fn mac(algorithm: &str, key: &[u8], message: &[u8]) -> Vec<u8> {
    match algorithm {
        "hmac-sha1" => hmac::<sha1::Sha1>(key, message),
        _ => hmac::<sha2::Sha256>(key, message),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The event a delivery becomes: `<prefix>.<type>` (the type's own dots kept), or the prefix
/// alone when the delivery names no type.
pub fn event_name(prefix: &str, event_type: Option<&str>) -> String {
    match event_type.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => format!("{prefix}.{t}"),
        None => prefix.to_owned(),
    }
}

/// The most a grace window for a rotated-out secret may last: seven days.
pub const MAX_GRACE_SECS: i64 = 7 * 86_400;
/// A rotation's grace window when the request names none: a day.
pub const DEFAULT_GRACE_SECS: i64 = 86_400;

/// A requested grace window: none asked → the default; clamped to [0, 7 days].
pub fn grace_secs(requested: Option<i32>) -> i64 {
    requested.map_or(DEFAULT_GRACE_SECS, |g| {
        i64::from(g).clamp(0, MAX_GRACE_SECS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn github_style_deliveries_verify_with_current_or_previous_secret() {
        let body = br#"{"action":"opened"}"#;
        let sig = format!("sha256={}", hex::encode(hmac::<sha2::Sha256>(b"new", body)));
        let h = headers(&[
            ("X-Hub-Signature-256", &sig),
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "d-1"),
        ]);
        let d = Delivery { headers: &h, body };
        let gh = VerifyConfig::github();
        gh.validate().expect("valid");
        let now = 0;
        let current = verify(
            Some(&gh),
            ("", ""),
            &d,
            &[(SecretSlot::Current, "new")],
            now,
        );
        assert_eq!(current.slot, Some(SecretSlot::Current));
        let rotated = verify(
            Some(&gh),
            ("", ""),
            &d,
            &[
                (SecretSlot::Current, "newer"),
                (SecretSlot::Previous, "new"),
            ],
            now,
        );
        assert_eq!(rotated.slot, Some(SecretSlot::Previous));
        let forged = verify(
            Some(&gh),
            ("", ""),
            &d,
            &[(SecretSlot::Current, "other")],
            now,
        );
        assert_eq!(forged.slot, None);
        assert_eq!(forged.check.error.as_deref(), Some("no signature matches"));
        assert_eq!(d.event_type(Some(&gh)).as_deref(), Some("pull_request"));
        assert_eq!(d.dedup_id(Some(&gh)).as_deref(), Some("d-1"));
    }

    #[test]
    fn stripe_style_deliveries_sign_the_timestamp_and_honour_the_tolerance() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let ts = 1_700_000_000_i64;
        let signed = format!("{ts}.{}", String::from_utf8_lossy(body));
        let v1 = hex::encode(hmac::<sha2::Sha256>(b"whsec", signed.as_bytes()));
        let header = format!("t={ts},v1=deadbeef,v1={v1}");
        let h = headers(&[("Stripe-Signature", &header)]);
        let d = Delivery { headers: &h, body };
        let stripe = VerifyConfig::stripe();
        stripe.validate().expect("valid");
        let ok = verify(
            Some(&stripe),
            ("", ""),
            &d,
            &[(SecretSlot::Current, "whsec")],
            ts + 10,
        );
        assert_eq!(ok.slot, Some(SecretSlot::Current), "{:?}", ok.check);
        assert_eq!(ok.check.presented.len(), 2, "every v1 entry is tried");
        let late = verify(
            Some(&stripe),
            ("", ""),
            &d,
            &[(SecretSlot::Current, "whsec")],
            ts + 301,
        );
        assert_eq!(late.slot, None);
        assert!(late.check.error.expect("says why").contains("tolerance"));
        assert_eq!(
            event_name("stripe", d.event_type(Some(&stripe)).as_deref()),
            "stripe.payment_intent.succeeded"
        );
        assert_eq!(d.dedup_id(Some(&stripe)).as_deref(), Some("evt_1"));
    }

    #[test]
    fn base64_sha1_and_legacy_schemes() {
        let body = b"hello";
        let config = VerifyConfig {
            signature_header: "X-Shopify-Hmac-Sha256".into(),
            encoding: "base64".into(),
            algorithm: "hmac-sha1".into(),
            ..VerifyConfig::default()
        };
        let sig = base64::engine::general_purpose::STANDARD.encode(hmac::<sha1::Sha1>(b"k", body));
        let h = headers(&[("X-Shopify-Hmac-Sha256", &sig)]);
        let d = Delivery { headers: &h, body };
        assert_eq!(
            verify(
                Some(&config),
                ("", ""),
                &d,
                &[(SecretSlot::Current, "k")],
                0
            )
            .slot,
            Some(SecretSlot::Current)
        );
        let legacy_sig = format!("sha256={}", hex::encode(hmac::<sha2::Sha256>(b"k", body)));
        let h = headers(&[("X-Signature", &legacy_sig)]);
        let d = Delivery { headers: &h, body };
        assert_eq!(
            verify(
                None,
                ("X-Signature", ""),
                &d,
                &[(SecretSlot::Current, "k")],
                0
            )
            .slot,
            Some(SecretSlot::Current)
        );
        assert_eq!(
            verify(None, ("X-Signature", ""), &d, &[], 0).slot,
            Some(SecretSlot::Unsigned)
        );
    }

    #[test]
    fn base64_sha256_signatures_keep_their_padding_and_bodies_are_signed_byte_for_byte() {
        let body: &[u8] = b"\xff{ts}\x00";
        let config = VerifyConfig {
            signature_header: "X-Shopify-Hmac-Sha256".into(),
            encoding: "base64".into(),
            ..VerifyConfig::default()
        };
        let sig =
            base64::engine::general_purpose::STANDARD.encode(hmac::<sha2::Sha256>(b"k", body));
        assert!(sig.ends_with('='), "{sig}");
        let h = headers(&[("X-Shopify-Hmac-Sha256", &sig)]);
        let d = Delivery { headers: &h, body };
        assert_eq!(
            verify(
                Some(&config),
                ("", ""),
                &d,
                &[(SecretSlot::Current, "k")],
                0
            )
            .slot,
            Some(SecretSlot::Current)
        );
        assert_eq!(fill_template("{ts}.{body}", "{id}", "x", b"b"), b"{id}.b");
    }

    #[test]
    fn a_timestamp_far_from_now_is_refused_not_overflowed() {
        let h = headers(&[("Stripe-Signature", "t=-9223372036854775808,v1=00")]);
        let d = Delivery {
            headers: &h,
            body: b"{}",
        };
        let v = verify(
            Some(&VerifyConfig::stripe()),
            ("", ""),
            &d,
            &[(SecretSlot::Current, "k")],
            1_700_000_000,
        );
        assert_eq!(v.slot, None);
    }

    #[test]
    fn configs_that_would_mislead_are_refused() {
        let mut c = VerifyConfig::github();
        c.tolerance_seconds = 60;
        assert!(c.validate().expect_err("refused").contains("{ts}"));
        let mut c = VerifyConfig::stripe();
        c.timestamp_key.clear();
        assert!(c.validate().is_err());
        let mut c = VerifyConfig::github();
        c.encoding = "hexx".into();
        assert!(c.validate().is_err());
        let mut c = VerifyConfig::github();
        c.event_name_path = "X-GitHub-Event".into();
        assert!(c.validate().is_err());
        assert_eq!(grace_secs(None), DEFAULT_GRACE_SECS);
        assert_eq!(grace_secs(Some(10_000_000)), MAX_GRACE_SECS);
        assert_eq!(grace_secs(Some(-5)), 0);
    }
}
