//! Which sequence positions a cut reads and ships.
//!
//! Reading a sequence's position costs a few microseconds; 2,000 of them
//! at every tick would cost more than the rest of an idle tick. So a cut
//! reads the sequences tied to the tables written in its window — owned
//! by one of their columns (serial, identity) or named in a column's
//! default — after its snapshot: every value stored in the batch's rows
//! through them travels with the batch. Every replicated sequence is read
//! at most once per [`ALL_EVERY`] (by the probe of an idle tick or by a
//! cut): a value taken with a bare `nextval()`, or stored through a
//! sequence no column names, travels within about that long.

use std::time::{Duration, Instant};

/// How often every sequence is read.
pub const ALL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Positions {
    /// The replicated sequences (regclass texts).
    names: Vec<String>,
    /// Per table (the cutter's order), the sequences tied to it.
    tied: Vec<Vec<usize>>,
    /// The position each sequence last shipped at (None: never used).
    shipped: Vec<Option<i64>>,
    /// When every sequence was last read and found shipped (None: due).
    all_read: Option<Instant>,
}

impl Positions {
    pub fn new(names: Vec<String>, tied: Vec<Vec<usize>>) -> Self {
        Self {
            shipped: vec![None; names.len()],
            names,
            tied,
            all_read: None,
        }
    }

    /// Whether the next read should cover every sequence.
    pub fn all_due(&self, now: Instant) -> bool {
        self.all_read
            .is_none_or(|at| now.duration_since(at) >= ALL_EVERY)
    }

    /// The sequences a read now should cover: those tied to `tables`
    /// (besides `read`, which were read already), and every one when due.
    pub fn to_read(&self, tables: &[usize], read: &[usize], now: Instant) -> Vec<usize> {
        let mut out: Vec<usize> = if self.all_due(now) && read.is_empty() {
            (0..self.names.len()).collect()
        } else {
            tables
                .iter()
                .filter_map(|&t| self.tied.get(t))
                .flatten()
                .copied()
                .filter(|s| !read.contains(s))
                .collect()
        };
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The regclass texts of `which`.
    pub fn names(&self, which: &[usize]) -> Vec<String> {
        which
            .iter()
            .filter_map(|&i| self.names.get(i).cloned())
            .collect()
    }

    /// Whether any of `which` stands elsewhere than it last shipped.
    pub fn moved(&self, which: &[usize], positions: &[Option<i64>]) -> bool {
        which
            .iter()
            .zip(positions)
            .any(|(&i, p)| self.shipped.get(i) != Some(p))
    }

    /// `which` read at `positions` (and shipped, or found unmoved).
    pub fn read(&mut self, which: &[usize], positions: &[Option<i64>], now: Instant) {
        for (&i, &p) in which.iter().zip(positions) {
            if let Some(slot) = self.shipped.get_mut(i) {
                *slot = p;
            }
        }
        if which.len() == self.names.len() && positions.len() == which.len() {
            self.all_read = Some(now);
        }
    }

    /// A replica joined: it may have missed the batch that last carried a
    /// position, so every one ships again with the next batch.
    pub fn resend(&mut self) {
        self.shipped.iter_mut().for_each(|s| *s = None);
        self.all_read = None;
    }

    /// The (name, position) pairs a batch carries.
    pub fn carried(
        &self,
        which: &[usize],
        positions: &[Option<i64>],
    ) -> Vec<(String, Option<i64>)> {
        self.names(which)
            .into_iter()
            .zip(positions.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_reads_the_sequences_of_its_tables_and_every_one_once_a_second() {
        let names = ["s_a", "s_b", "free"].map(String::from).to_vec();
        let mut p = Positions::new(names, vec![vec![0], vec![1], vec![]]);
        let now = Instant::now();
        // Nothing read yet: every sequence.
        assert_eq!(p.to_read(&[0], &[], now), vec![0, 1, 2]);
        assert!(p.moved(&[0, 1, 2], &[None, None, Some(4)]));
        p.read(&[0, 1, 2], &[None, None, Some(4)], now);
        // Within the second: those of the tables written, only.
        let soon = now + Duration::from_millis(300);
        assert_eq!(p.to_read(&[1, 2], &[], soon), vec![1]);
        assert!(p.to_read(&[2], &[], soon).is_empty());
        assert!(!p.moved(&[2], &[Some(4)]));
        // Found later in the window: only what was not read.
        assert_eq!(p.to_read(&[0, 1], &[1], soon), vec![0]);
        // After a second: all of them again.
        let later = now + ALL_EVERY;
        assert_eq!(p.to_read(&[], &[], later), vec![0, 1, 2]);
        // A replica joins: everything ships again.
        p.resend();
        assert!(p.all_due(soon));
        assert!(p.moved(&[2], &[Some(4)]));
        assert_eq!(
            p.carried(&[2], &[Some(4)]),
            vec![("free".to_string(), Some(4))]
        );
    }
}
