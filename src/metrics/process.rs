//! The `process_*` series of this process: the prometheus crate's process
//! collector, with `process_cpu_seconds_total` to the microsecond.
//!
//! The crate's collector keeps CPU time as an integer counter of whole
//! seconds (`(utime + stime) / CLK_TCK`, integer division), so a proxy
//! using a fraction of a core drew a staircase: `rate()` over a minute
//! jumped between 0 and 1/60 (#29). `getrusage(2)` gives the same time in
//! microseconds; the rest of the crate's series are kept as they are.

use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{Counter, MetricFamily};

const CPU_SECONDS: &str = "process_cpu_seconds_total";

pub struct ProcessMetrics {
    inner: ProcessCollector,
}

impl ProcessMetrics {
    pub fn for_self() -> Self {
        ProcessMetrics {
            inner: ProcessCollector::for_self(),
        }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        if let Some(seconds) = cpu_seconds() {
            for family in families.iter_mut().filter(|f| f.name() == CPU_SECONDS) {
                for metric in family.mut_metric().iter_mut() {
                    let mut counter = Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// User plus system CPU time of this process so far, in seconds.
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole rusage into the pointer on success.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_have_fractions() {
        // Burn a little CPU so the figure is not zero.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let families = ProcessMetrics::for_self().collect();
        let cpu = families.iter().find(|f| f.name() == CPU_SECONDS).unwrap();
        let value = cpu.get_metric()[0].get_counter().get_value();
        assert!(value > 0.0 && value.fract() != 0.0, "{value}");
    }
}
