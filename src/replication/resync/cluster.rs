//! A resync in a cluster (#25): the cut holds the origin's and the donor's
//! deliveries at one position, which only the instance holding both can
//! do. The instance asked for a resync pins both to itself (their holders
//! hand them over as when the spread moves) and runs it; its end unpins
//! them. Any instance's admin API takes the request.

use super::ResyncError;
use crate::pool::Origin;
use crate::replication::Replicator;

impl Replicator {
    /// In a cluster, brings `origin`'s and `donor`'s deliveries to this
    /// instance for the resync's length (outside one, nothing to do).
    pub(super) async fn gather_here(
        &self,
        origin: &Origin,
        donor: &Origin,
    ) -> Result<(), ResyncError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let both = [origin.name.as_str(), donor.name.as_str()];
        let moved = both.iter().any(|o| !shared.member.holds(o));
        if moved {
            log::info!(
                "cluster: the resync of {} from {} gathers both origins' deliveries on this instance",
                origin.name,
                donor.name
            );
        }
        shared
            .member
            .pin_here(&both)
            .await
            .map_err(|why| ResyncError::NotGathered {
                origin: origin.name.clone(),
                donor: donor.name.clone(),
                why,
            })
    }

    /// The resync of `origin` from `donor` ended (or never started): both
    /// may go back where the spread puts them.
    pub(super) fn unpin(&self, origin: &Origin, donor: &Origin) {
        if let Some(shared) = &self.shared {
            (shared.member).unpin_here(vec![origin.name.clone(), donor.name.clone()]);
        }
    }
}
