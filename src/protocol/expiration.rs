//! §Expiration: unfinished uploads expire `expiration.expire_after` after their creation or
//! last PATCH, and say so in `Upload-Expires` (RFC 9110 date). Finished uploads do not expire.
//! Expired uploads answer 410 until the sweeper ([`crate::session::expiry`]) deletes them,
//! then 404.

use warp::reply::Response;

use super::{headers, set_header, UPLOAD_EXPIRES};
use crate::state::AppState;
use crate::upload::{unix_now, UploadInfo};

/// When an upload touched now should expire, given whether it is finished.
pub fn deadline(state: &AppState, finished: bool) -> Option<u64> {
    let ttl = state.settings.expiration.expire_after.0;
    // Round up, so a sub-second setting never makes an upload expire on creation.
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    (!finished).then(|| unix_now() + secs)
}

/// Restart the expiry clock of `info` after activity.
pub fn renew(state: &AppState, info: &mut UploadInfo) {
    info.expires_at = deadline(state, info.is_finished());
}

/// Add `Upload-Expires` when the upload can expire.
pub fn describe(info: &UploadInfo, response: &mut Response) {
    if let Some(at) = info.expires_at {
        set_header(response, UPLOAD_EXPIRES, headers::http_date(at));
    }
}

/// Push the expiry of an upload whose connection was lost with a server address out to at
/// least `expiration.network_change_grace` from now.
pub fn grant_grace(state: &AppState, info: &mut UploadInfo) {
    if let Some(at) = info.expires_at {
        let grace = state.settings.expiration.network_change_grace.0.as_secs();
        info.expires_at = Some(at.max(unix_now() + grace));
    }
}
