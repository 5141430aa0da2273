//! Making bytes and records agree on a local data directory after whatever stopped the last
//! run, without ever destroying what a client was told is stored.
//!
//! Start-up first surveys, changing nothing: every record against its file, every file against
//! its record and the copy of its record kept beside it. Then:
//! - a file with a record copy but no record, or whose copy says finished while the record
//!   says otherwise, means the session database lost records it had durably stored (damaged,
//!   truncated, replaced, rolled back): with fsync durability tusk refuses to start
//!   and changes nothing; `tusk recover` rebuilds those records from the copies. (With relaxed
//!   durability a crash may lose the last records by design, so they are rebuilt at once.)
//! - a file with neither was never acknowledged (a creation cut short) or was being deleted:
//!   it moves to quarantine, deleted only after `storage.quarantine_for`;
//! - a record whose file is missing, or whose finished file came back shorter, is marked lost
//!   (410), never silently restarted; an unfinished one whose file is shorter continues from
//!   the bytes that are there (the client still has the rest);
//! - a file longer than its record is cut back to the offset (those bytes were never
//!   acknowledged).

use std::collections::HashSet;
use std::time::Duration;

use crate::config::Durability;
use crate::session::{SessionError, SessionStore};
use crate::storage::fs::FsBlobStore;
use crate::storage::{BlobStore, StoreError};
use crate::upload::{UploadId, UploadInfo, UploadState};

/// Why the data directory cannot be served as it is.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The session database lost records it had stored.
    #[error("{count} upload(s) have their bytes and a copy of their record on disk but no record ({rolled_back} of them: an older, unfinished one) in the session database (first: {first}): the database lost records it had stored (damaged, truncated or replaced). Nothing was changed. Run `tusk recover` to rebuild them from the copies, then start again")]
    RecordsMissing {
        /// How many.
        count: usize,
        /// How many of them the database has, but older (unfinished).
        rolled_back: usize,
        /// One of them, for the message.
        first: UploadId,
    },
    /// The session store failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The blob store failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What the survey found; nothing has been changed yet.
#[derive(Debug, Default)]
pub struct Survey {
    /// Every record, with the length of its file (`None`: no file).
    pub records: Vec<(UploadInfo, Option<u64>)>,
    /// Records whose copy beside the bytes is missing.
    pub without_copy: Vec<UploadId>,
    /// Files whose record is gone, or rolled back from finished to unfinished, but whose copy
    /// is there: the record rebuilt from the copy and the bytes.
    pub lost_records: Vec<UploadInfo>,
    /// How many of `lost_records` the database has in an older, unfinished state.
    pub rolled_back: usize,
    /// Files with neither record nor copy.
    pub unclaimed: Vec<UploadId>,
}

/// Look at every record and every file; change nothing.
///
/// # Errors
/// When either store cannot be read.
pub async fn survey(
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
) -> Result<Survey, RecoveryError> {
    let mut survey = Survey::default();
    let mut known = HashSet::new();
    for info in sessions.all().await? {
        known.insert(info.id.clone());
        let stored = match blobs.len(&info.id).await {
            Ok(len) => Some(len),
            Err(StoreError::NotFound) => None,
            Err(err) => return Err(err.into()),
        };
        if stored.is_some() {
            match blobs.record_copy(&info.id).await? {
                None => survey.without_copy.push(info.id.clone()),
                // The copy was told the upload is whole (after its record was durable), but
                // the record has it unfinished: the database rolled it back.
                Some(copy) if copy.is_finished() && !info.is_finished() => {
                    if let Some(rebuilt) = blobs.recover(&info.id).await? {
                        survey.lost_records.push(rebuilt);
                        survey.rolled_back += 1;
                        continue;
                    }
                }
                Some(_) => {}
            }
        }
        survey.records.push((info, stored));
    }
    for id in blobs.ids().await? {
        if known.contains(&id) {
            continue;
        }
        match blobs.recover(&id).await? {
            Some(rebuilt) => survey.lost_records.push(rebuilt),
            None => survey.unclaimed.push(id),
        }
    }
    Ok(survey)
}

/// The survey's verdict for a start-up: `Err` when the server must not start.
///
/// # Errors
/// [`RecoveryError::RecordsMissing`] under fsync durability when records were lost.
pub fn verdict(survey: &Survey, durability: Durability) -> Result<(), RecoveryError> {
    match (survey.lost_records.first(), durability) {
        (Some(first), Durability::Fsync) => Err(RecoveryError::RecordsMissing {
            count: survey.lost_records.len(),
            rolled_back: survey.rolled_back,
            first: first.id.clone(),
        }),
        _ => Ok(()),
    }
}

/// What [`repair`] did, for the log and `tusk recover`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    /// Records rebuilt from their copies.
    pub rebuilt: usize,
    /// Uploads marked lost.
    pub lost: usize,
    /// Files cut back to their record's offset.
    pub cut: usize,
    /// Offsets lowered to the bytes present (unfinished uploads).
    pub lowered: usize,
    /// Files moved to quarantine.
    pub quarantined: usize,
}

/// Apply the survey: rebuild lost records (the caller decided that is wanted), mark lost
/// uploads, cut unacknowledged tails, quarantine unclaimed files, write missing copies.
///
/// # Errors
/// When a store fails.
pub async fn repair(
    survey: Survey,
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
) -> Result<Repairs, RecoveryError> {
    let mut done = Repairs::default();
    for info in survey.lost_records {
        tracing::warn!(upload = %info.id, offset = info.offset, "record rebuilt from its copy beside the bytes");
        sessions.put(&info).await?;
        done.rebuilt += 1;
    }
    for (mut info, stored) in survey.records {
        match stored {
            None if info.offset == 0 => {
                // Nothing was acknowledged: an empty file is all it had.
                blobs.create(&info.id).await?;
                blobs.keep_record_copy(&info).await?;
            }
            None => {
                tracing::error!(upload = %info.id, offset = info.offset, "the upload's data file is gone: marked lost");
                mark_lost(sessions, &mut info).await?;
                done.lost += 1;
            }
            Some(len) if len > info.offset => {
                blobs.truncate(&info.id, info.offset).await?;
                tracing::info!(upload = %info.id, from = len, to = info.offset, "cut unacknowledged bytes");
                done.cut += 1;
            }
            Some(len) if len < info.offset && info.is_finished() => {
                tracing::error!(upload = %info.id, offset = info.offset, stored = len, "a finished upload's data came back shorter: marked lost");
                mark_lost(sessions, &mut info).await?;
                done.lost += 1;
            }
            Some(len) if len < info.offset => {
                tracing::warn!(upload = %info.id, offset = info.offset, stored = len, "data shorter than its record; the client resumes from what is there");
                info.offset = len;
                info.state = UploadState::Interrupted;
                sessions.put(&info).await?;
                done.lowered += 1;
            }
            Some(_) => {}
        }
    }
    for id in &survey.without_copy {
        if let Some(info) = sessions.get(id).await? {
            blobs.keep_record_copy(&info).await?;
        }
    }
    for id in &survey.unclaimed {
        tracing::info!(upload = %id, "data without a record moved to quarantine");
        blobs.quarantine(id).await?;
        done.quarantined += 1;
    }
    sessions.flush().await?;
    Ok(done)
}

async fn mark_lost(sessions: &dyn SessionStore, info: &mut UploadInfo) -> Result<(), SessionError> {
    if info.state != UploadState::Lost {
        info.state = UploadState::Lost;
        sessions.put(info).await?;
    }
    Ok(())
}

/// Start-up on a local data directory: survey, refuse if records were lost (fsync), repair,
/// and delete quarantined files older than `keep`.
///
/// # Errors
/// [`RecoveryError::RecordsMissing`], or a store failure.
pub async fn reconcile(
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
    durability: Durability,
    keep: Duration,
) -> Result<Repairs, RecoveryError> {
    let survey = survey(sessions, blobs).await?;
    verdict(&survey, durability)?;
    let repairs = repair(survey, sessions, blobs).await?;
    let expired = blobs.expire_quarantine(keep).await?;
    if expired > 0 {
        tracing::info!(
            files = expired,
            "quarantined files deleted after storage.quarantine_for"
        );
    }
    // Entries of files created before a crash may never have been synced: sync them now,
    // before any record that a sync precedes can point at them.
    if blobs.can_sync_all() {
        blobs.sync_all().await?;
    }
    if repairs != Repairs::default() {
        tracing::warn!(?repairs, "data directory repaired at start-up");
    }
    Ok(repairs)
}

/// What `tusk recover` did and could not do.
#[derive(Debug, Default)]
pub struct RecoverReport {
    /// Records rebuilt from copies (files in place or back from quarantine).
    pub rebuilt: Vec<UploadId>,
    /// Files with no copy of their record: left where they are (in quarantine).
    pub unrecoverable: Vec<UploadId>,
    /// The rest of the start-up repair that followed.
    pub repairs: Repairs,
}

/// `tusk recover`: rebuild every lost record from the copy beside its bytes, bring
/// quarantined files that have a copy back, then repair as start-up would.
///
/// # Errors
/// When a store fails.
pub async fn recover(
    sessions: &dyn SessionStore,
    blobs: &FsBlobStore,
) -> Result<RecoverReport, RecoveryError> {
    let mut report = RecoverReport::default();
    for id in blobs.quarantined().map_err(StoreError::from)? {
        if sessions.get(&id).await?.is_some() {
            continue;
        }
        match blobs.quarantined_copy(&id).map_err(StoreError::from)? {
            Some(_) => {
                blobs
                    .restore_from_quarantine(&id)
                    .map_err(StoreError::from)?;
            }
            None => report.unrecoverable.push(id),
        }
    }
    let survey = survey(sessions, blobs).await?;
    report.rebuilt = survey.lost_records.iter().map(|i| i.id.clone()).collect();
    report
        .unrecoverable
        .extend(survey.unclaimed.iter().cloned());
    report.repairs = repair(survey, sessions, blobs).await?;
    Ok(report)
}
