//! Digest pinning over a release's retained revisions: a module URL that an earlier
//! revision used with other content is refused (`hoist_provenance::pin` decides which URLs
//! are pinnable and compares like digests with like). Used by `hoist takeoff` and by the
//! controller, so both refuse the same modules with the same words.

use crate::state::Source;
use crate::{Connection, load_release};
use hoist_provenance::checksum::Sha256Digest;
use hoist_provenance::pin::{ModuleDigests, PinError, PinReport, check_pin};

/// Why a module could not be checked, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PinCheckError {
    /// The release's history could not be read.
    #[error(transparent)]
    Release(#[from] crate::Error),
    /// The module's SHA-256 is missing or malformed (a caller bug, or a module without
    /// provenance such as stdin).
    #[error("module {url}: no valid SHA-256 to pin: {reason}")]
    Digest {
        /// The module URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An earlier revision used the same URL with other content.
    #[error(transparent)]
    Changed(#[from] PinError),
}

/// Compares `source` with every retained revision of `release` in `namespace` that used the
/// same URL. Revisions recorded by Yoke (SHA-1 only) are compared through `source.checksum`.
pub async fn check_digest_pin(
    conn: &Connection,
    release: &str,
    namespace: &str,
    source: &Source,
) -> Result<PinReport, PinCheckError> {
    let sha256 = source.sha256.as_deref().unwrap_or("");
    let digests = ModuleDigests {
        sha256: Sha256Digest::from_hex(sha256).map_err(|e| PinCheckError::Digest {
            url: source.url.clone(),
            reason: e.to_string(),
        })?,
        sha1: (!source.checksum.is_empty()).then(|| source.checksum.clone()),
    };
    let history = load_release(conn, release, namespace).await?;
    let previous: Vec<(String, String)> = history
        .history
        .iter()
        .map(|r| {
            let checksum = r
                .source
                .sha256
                .clone()
                .unwrap_or_else(|| r.source.checksum.clone());
            (r.source.url.clone(), checksum)
        })
        .collect();
    let report = check_pin(
        &source.url,
        &digests,
        previous.iter().map(|(u, c)| (u.as_str(), c.as_str())),
    )?;
    if report.uncomparable > 0 {
        tracing::warn!(
            "{} earlier revision(s) of {release} used {} with a checksum hoist cannot compare",
            report.uncomparable,
            source.url
        );
    }
    Ok(report)
}
