//! Choosing a deployment: drop unhealthy ones, take the best (lowest) priority that still has a
//! healthy deployment, then pick by weight inside it. The random draw is a parameter, so the
//! choice is a pure function.

use crate::config::Deployment;

/// `healthy(name)` says whether a deployment may take traffic; `draw` is uniform in [0, 1).
pub fn choose(
    deployments: &[Deployment],
    healthy: impl Fn(&str) -> bool,
    draw: f64,
) -> Option<&Deployment> {
    let best = deployments
        .iter()
        .filter(|d| healthy(&d.name))
        .map(|d| d.priority)
        .min()?;
    let tier: Vec<&Deployment> = deployments
        .iter()
        .filter(|d| d.priority == best && healthy(&d.name))
        .collect();
    let total: u64 = tier.iter().map(|d| u64::from(d.weight)).sum();
    let mut point = (draw.clamp(0.0, 1.0) * total as f64) as u64;
    for d in &tier {
        let w = u64::from(d.weight);
        if point < w {
            return Some(d);
        }
        point -= w;
    }
    tier.last().copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::Provider;

    fn dep(name: &str, weight: u32, priority: u32) -> Deployment {
        Deployment {
            name: name.into(),
            cluster: name.into(),
            provider: Provider::OpenAi,
            model: "m".into(),
            weight,
            priority,
        }
    }

    #[test]
    fn weights_split_the_draw() {
        let ds = [dep("a", 3, 1), dep("b", 1, 1)];
        let pick = |x| choose(&ds, |_| true, x).unwrap().name.clone();
        assert_eq!(pick(0.0), "a");
        assert_eq!(pick(0.74), "a");
        assert_eq!(pick(0.75), "b");
        assert_eq!(pick(0.999), "b");
        let mut counts = [0; 2];
        for i in 0..1000 {
            counts[usize::from(pick(i as f64 / 1000.0) == "b")] += 1;
        }
        assert_eq!(counts, [750, 250]);
    }

    #[test]
    fn lower_priority_only_when_the_better_tier_is_down() {
        let ds = [dep("primary", 1, 1), dep("fallback", 5, 2)];
        assert_eq!(choose(&ds, |_| true, 0.9).unwrap().name, "primary");
        assert_eq!(
            choose(&ds, |n| n != "primary", 0.1).unwrap().name,
            "fallback"
        );
        assert!(choose(&ds, |_| false, 0.5).is_none());
    }
}
