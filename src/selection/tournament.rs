//! Which candidate wins the next smooth weighted round robin pick, in
//! O(log n) instead of a walk over every candidate (a kinetic tournament).
//!
//! Between rebuilds a candidate's score after `t` picks is a line,
//! `b + t·w`: every pick adds every weight, and only the winner's `b` moves
//! (down by the total). A binary tree over the candidates, in index order,
//! keeps at each node the winner of its leaves (the highest score, the first
//! on a tie, as the walk in [`super::swrr`] picks) and the first pick at
//! which that can change: when a line from below overtakes. A pick advances
//! `t`, replays only the nodes whose time has come, and after the winner's
//! `b` moves recomputes its path to the root. Same winners as the walk
//! (a test compares them over random weights).
//!
//! Why: with 1,000 origins the walk cost 10,000 instructions per request,
//! more than hothot's own work on the rest of the request.

/// Below this many candidates the walk is cheaper than the tree.
pub const MIN_CANDIDATES: usize = 32;

const NONE: u32 = u32::MAX;
const NEVER: i128 = i128::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    /// The winning candidate under this node, or [`NONE`] (padding).
    winner: u32,
    /// The first `t` at which some winner under this node may change.
    changes_at: i128,
}

/// The scores of one set of candidates with fixed weights.
#[derive(Debug)]
pub struct Tournament {
    t: i128,
    /// Each score is `base + t·weight`.
    base: Vec<i128>,
    weight: Vec<i128>,
    /// A complete binary tree: node 1 is the root, leaves from `leaves`.
    nodes: Vec<Node>,
    leaves: usize,
}

impl Tournament {
    /// Candidates whose scores are `current` now, with `weights`.
    pub fn new(current: &[i64], weights: &[i64]) -> Self {
        let leaves = current.len().next_power_of_two().max(1);
        let mut tournament = Tournament {
            t: 0,
            base: current.iter().map(|&c| i128::from(c)).collect(),
            weight: weights.iter().map(|&w| i128::from(w)).collect(),
            nodes: vec![
                Node {
                    winner: NONE,
                    changes_at: NEVER,
                };
                2 * leaves
            ],
            leaves,
        };
        for k in 0..current.len() {
            tournament.nodes[leaves + k].winner = k as u32;
        }
        for node in (1..leaves).rev() {
            tournament.combine(node);
        }
        tournament
    }

    /// One pick: every score grows by its weight, the highest (first on a
    /// tie) wins and gives back `total`. `None` without candidates.
    pub fn pick(&mut self, total: i64) -> Option<usize> {
        self.t += 1;
        self.replay(1);
        let winner = self.nodes[1].winner;
        if winner == NONE {
            return None;
        }
        let winner = winner as usize;
        self.base[winner] -= i128::from(total);
        let mut node = (self.leaves + winner) / 2;
        while node >= 1 {
            self.combine(node);
            node /= 2;
        }
        Some(winner)
    }

    /// Every candidate's score now.
    pub fn scores(&self) -> Vec<i64> {
        self.base
            .iter()
            .zip(&self.weight)
            .map(|(&b, &w)| i64::try_from(b + self.t * w).unwrap_or(i64::MAX))
            .collect()
    }

    fn score(&self, k: u32) -> i128 {
        self.base[k as usize] + self.t * self.weight[k as usize]
    }

    /// Recomputes the nodes under `node` whose winner may have changed.
    fn replay(&mut self, node: usize) {
        if node >= self.leaves || self.nodes[node].changes_at > self.t {
            return;
        }
        self.replay(2 * node);
        self.replay(2 * node + 1);
        self.combine(node);
    }

    /// The winner of `node` from its children's, at `t`, and when it may change.
    fn combine(&mut self, node: usize) {
        let (left, right) = (self.nodes[2 * node], self.nodes[2 * node + 1]);
        let children_change = left.changes_at.min(right.changes_at);
        let (winner, own_change) = match (left.winner, right.winner) {
            (NONE, _) => (right.winner, NEVER),
            (_, NONE) => (left.winner, NEVER),
            (l, r) => {
                let (bl, wl) = (self.base[l as usize], self.weight[l as usize]);
                let (br, wr) = (self.base[r as usize], self.weight[r as usize]);
                if self.score(r) > self.score(l) {
                    // The left one wins back once b_l + t·w_l >= b_r + t·w_r.
                    let change = match wl > wr {
                        true => ceil_div(br - bl, wl - wr),
                        false => NEVER,
                    };
                    (r, change)
                } else {
                    // The right one takes over once b_r + t·w_r > b_l + t·w_l.
                    let change = match wr > wl {
                        true => (bl - br).div_euclid(wr - wl) + 1,
                        false => NEVER,
                    };
                    (l, change)
                }
            }
        };
        self.nodes[node] = Node {
            winner,
            changes_at: children_change.min(own_change),
        };
    }
}

/// `⌈a / b⌉` for `b > 0`.
fn ceil_div(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk it replaces: add every weight, the first highest wins.
    fn walk(current: &mut [i64], weights: &[i64], total: i64) -> Option<usize> {
        let mut best: Option<(usize, i64)> = None;
        for (k, (score, &weight)) in current.iter_mut().zip(weights).enumerate() {
            *score += weight;
            if best.is_none_or(|(_, top)| *score > top) {
                best = Some((k, *score));
            }
        }
        let (best, _) = best?;
        current[best] -= total;
        Some(best)
    }

    /// A small deterministic generator (xorshift), so a failure repeats.
    fn numbers(seed: u64) -> impl FnMut(u64) -> i64 {
        let mut state = seed;
        move |below| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below) as i64
        }
    }

    #[test]
    fn the_same_winners_as_the_walk_over_random_weights() {
        let mut random = numbers(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let n = 1 + random(70) as usize;
            // Some equal weights (ties), some far apart.
            let weights: Vec<i64> = (0..n)
                .map(|_| match random(3) {
                    0 => 1000,
                    1 => 1 + random(10),
                    _ => 1 + random(5_000_000),
                })
                .collect();
            let total = weights.iter().sum();
            let mut current: Vec<i64> = (0..n).map(|_| random(2001) - 1000).collect();
            let mut tournament = Tournament::new(&current, &weights);
            for pick in 0..3000 {
                let expected = walk(&mut current, &weights, total);
                assert_eq!(
                    tournament.pick(total),
                    expected,
                    "round {round}, pick {pick}"
                );
            }
            assert_eq!(tournament.scores(), current, "round {round}");
        }
    }

    #[test]
    fn no_candidates_no_pick() {
        assert_eq!(Tournament::new(&[], &[]).pick(0), None);
    }
}
