//! Medians and tails of samples taken side by side.

use std::time::{Duration, Instant};

use crate::support::Rng;

/// Samples of one measured thing, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// A 95% interval for `median(a) / median(b)`: the percentile bootstrap, each set
/// resampled on its own. On a shared machine one run's ratio moves by a few percent;
/// this says how many.
pub fn ratio_interval(a: &Samples, b: &Samples, rng: &mut Rng) -> (f64, f64) {
    const RESAMPLES: usize = 1000;
    if a.0.is_empty() || b.0.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut resample =
        |s: &Samples| Samples((0..s.0.len()).map(|_| s.0[rng.below(s.0.len())]).collect()).median();
    let ratios = Samples((0..RESAMPLES).map(|_| resample(a) / resample(b)).collect());
    (ratios.percentile(2.5), ratios.percentile(97.5))
}

/// Milliseconds `f` took.
pub fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let out = f();
    (ms(start.elapsed()), out)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
