//! Smooth weighted round robin (nginx's): each pick adds every candidate's
//! weight to its running score, takes the highest score and lowers it by
//! the candidates' total weight. With weights 5/4/3 the order is `a b c a b
//! a c b a b c a`: no long runs, and every window of Σw/gcd picks holds each
//! origin exactly its share. The scores restart from zero whenever the set
//! of serving origins changes; new weights alone keep them, so shares follow
//! a moving weight smoothly.

use super::tournament::{self, Tournament};
use std::sync::Mutex;

/// The smooth weighted round robin state, shared by all requests.
#[derive(Debug)]
pub struct SmoothWeighted {
    /// Scores of first picks (no origin excluded).
    first: Mutex<Scores>,
    /// Scores of retry picks (some origin excluded).
    retry: Mutex<Scores>,
}

#[derive(Debug)]
struct Scores {
    /// The serving set the scores were built for; a change restarts them.
    serving: Vec<bool>,
    /// The serving origins with a weight, in index order, and their scores
    /// and weights side by side: a pick walks only these, in one tight loop
    /// (with 1,000 origins, a walk over all of them with their states cost
    /// more than the rest of the request).
    candidates: Vec<usize>,
    current: Vec<i64>,
    weights: Vec<i64>,
    /// The candidates' weights together: what a winner gives back.
    total: i64,
    /// With many candidates, first picks go through this instead of
    /// walking `current`, which is then stale until the next refresh.
    tournament: Option<Tournament>,
    /// The pool generation `serving` was read at (see [`crate::pool::Pool::generation`]).
    generation: Option<u64>,
}

impl Scores {
    fn new(origins: usize) -> Self {
        Scores {
            serving: vec![false; origins],
            candidates: Vec::new(),
            current: Vec::new(),
            weights: Vec::new(),
            total: 0,
            tournament: None,
            generation: None,
        }
    }

    /// Re-reads the serving set and the weights unless `generation` says
    /// they cannot have changed. A new serving set restarts the scores; new
    /// weights alone keep them (as nginx's effective weights do), so that a
    /// factor moving a little moves the shares a little.
    fn refresh(
        &mut self,
        generation: Option<u64>,
        serving: impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> i64,
    ) {
        if generation.is_some() && generation == self.generation {
            return;
        }
        self.generation = generation;
        if let Some(tournament) = self.tournament.take() {
            self.current = tournament.scores();
        }
        let mut changed = false;
        for (i, last) in self.serving.iter_mut().enumerate() {
            let now = serving(i);
            changed |= now != *last;
            *last = now;
        }
        for (k, &i) in self.candidates.iter().enumerate() {
            self.weights[k] = weight(i);
            changed |= self.weights[k] <= 0;
        }
        if changed {
            self.candidates = (0..self.serving.len())
                .filter(|i| self.serving[*i] && weight(*i) > 0)
                .collect();
            self.weights = self.candidates.iter().map(|i| weight(*i)).collect();
            self.current = vec![0; self.candidates.len()];
        }
        self.total = self.weights.iter().sum();
    }
}

impl SmoothWeighted {
    pub fn new(origins: usize) -> Self {
        SmoothWeighted {
            first: Mutex::new(Scores::new(origins)),
            retry: Mutex::new(Scores::new(origins)),
        }
    }

    /// Picks among the origins that are `serving` and not `excluded` (a short
    /// or empty `excluded` excludes nothing), by `weight`. Zero-weight
    /// origins never win. `serving` and `weight` are asked again only when
    /// `generation` changes (`None`: every time). `None` when no candidate
    /// is left.
    pub fn pick(
        &self,
        generation: Option<u64>,
        serving: impl Fn(usize) -> bool,
        weight: impl Fn(usize) -> i64,
        excluded: &[bool],
    ) -> Option<usize> {
        let retry = excluded.contains(&true);
        let state = if retry { &self.retry } else { &self.first };
        // A poisoned lock only means another thread panicked mid-pick; the
        // scores are still integers, so carry on rather than fail requests.
        let mut scores = state.lock().unwrap_or_else(|e| e.into_inner());
        scores.refresh(generation, serving, weight);
        let Scores {
            candidates,
            current,
            weights,
            total,
            tournament,
            ..
        } = &mut *scores;
        let position = if retry {
            step(current, weights, |k| {
                !excluded.get(candidates[k]).copied().unwrap_or(false)
            })
        } else if candidates.len() >= tournament::MIN_CANDIDATES {
            tournament
                .get_or_insert_with(|| Tournament::new(current, weights))
                .pick(*total)
        } else {
            step(current, weights, |_| true)
        }?;
        Some(candidates[position])
    }
}

/// One smooth weighted round robin step over the candidates for which
/// `eligible(k)` holds: each adds its weight to its score, the highest score
/// wins and gives back the total. The winner's position.
fn step(current: &mut [i64], weights: &[i64], eligible: impl Fn(usize) -> bool) -> Option<usize> {
    let mut total = 0;
    let mut best: Option<(usize, i64)> = None;
    for (k, (score, &weight)) in current.iter_mut().zip(weights).enumerate() {
        if !eligible(k) {
            continue;
        }
        *score += weight;
        total += weight;
        if best.is_none_or(|(_, top)| *score > top) {
            best = Some((k, *score));
        }
    }
    let (best, _) = best?;
    current[best] -= total;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool-less selector over `weights`.
    struct Fixed(SmoothWeighted, Vec<i64>);

    impl Fixed {
        fn new(weights: &[i64]) -> Self {
            Fixed(SmoothWeighted::new(weights.len()), weights.to_vec())
        }

        fn pick(&self, serving: impl Fn(usize) -> bool, excluded: &[bool]) -> Option<usize> {
            self.0.pick(None, serving, |i| self.1[i], excluded)
        }
    }

    fn sequence(swrr: &Fixed, serving: &[bool], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| swrr.pick(|i| serving[i], &[]).unwrap())
            .collect()
    }

    #[test]
    fn every_window_of_one_period_is_exact() {
        let swrr = Fixed::new(&[1000, 800, 600]);
        let picks = sequence(&swrr, &[true; 3], 240);
        // Σ/gcd = 2400/200 = 12 and the shares are 5/4/3, in every window.
        for window in picks.windows(12) {
            let count = |o| window.iter().filter(|p| **p == o).count();
            assert_eq!((count(0), count(1), count(2)), (5, 4, 3), "{window:?}");
        }
    }

    #[test]
    fn no_bursts() {
        let swrr = Fixed::new(&[1000, 800, 600]);
        let picks = sequence(&swrr, &[true; 3], 1200);
        let longest = picks
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(longest <= 2, "longest run {longest}");
    }

    #[test]
    fn down_origins_leave_the_rest_proportional() {
        let swrr = Fixed::new(&[1000, 800, 600]);
        sequence(&swrr, &[true; 3], 5);
        let picks = sequence(&swrr, &[false, true, true], 700);
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 400);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 300);
    }

    #[test]
    fn zero_capacity_is_drained_and_nothing_left_is_none() {
        let swrr = Fixed::new(&[0, 5]);
        assert!(sequence(&swrr, &[true, true], 20).iter().all(|p| *p == 1));
        assert_eq!(swrr.pick(|_| true, &[false, true]), None);
        assert_eq!(swrr.pick(|_| false, &[]), None);
    }

    #[test]
    fn retries_pick_among_the_rest_by_capacity() {
        let swrr = Fixed::new(&[1000, 800, 600]);
        let excluded = [true, false, false];
        let picks: Vec<usize> = (0..700)
            .map(|_| swrr.pick(|_| true, &excluded).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 400);
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 300);
    }

    #[test]
    fn many_origins_pick_as_the_walk_does_across_weight_changes() {
        // Enough origins for the tournament; weights that move between
        // generations keep the scores, as with few origins.
        let n = 3 * tournament::MIN_CANDIDATES;
        let swrr = SmoothWeighted::new(n);
        let mut weights: Vec<i64> = (0..n as i64).map(|i| 100 + 37 * i % 251).collect();
        let mut current = vec![0i64; n];
        for generation in 0..6u64 {
            for _ in 0..700 {
                let w = weights.clone();
                let picked = swrr.pick(Some(generation), |_| true, |i| w[i], &[]);
                assert_eq!(picked, step(&mut current, &weights, |_| true));
            }
            weights[generation as usize * 7] += 500;
        }
    }

    #[test]
    fn new_weights_move_the_shares_without_a_restart() {
        let swrr = SmoothWeighted::new(2);
        let pick = |w: [i64; 2]| swrr.pick(None, |_| true, |i| w[i], &[]).unwrap();
        let first: Vec<usize> = (0..10).map(|_| pick([1, 1])).collect();
        assert_eq!(first, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        let picks: Vec<usize> = (0..400).map(|_| pick([1, 3])).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 300);
    }
}
