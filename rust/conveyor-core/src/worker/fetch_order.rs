//! Which queue a fetch tries next. Each fetch draws an order over the
//! worker's queues by weight; a worker of many queues tries the first few
//! with the fetch script and then looks over the rest in one round trip
//! (`RedisStore::with_work`), instead of running the script on each empty
//! queue: with 1,000 queues an idle worker made Redis run 16,000 fetches a
//! second (bench/queues_bench.py).

use rand::Rng;

/// Queues a fetch tries with the fetch script before looking over the rest.
pub(super) const TRIED_FIRST: usize = 4;

/// Fewest queues left untried for which one look over them all pays.
pub(super) const LOOK_FROM: usize = 8;

/// The order one fetch tries the queues of `weights` in: list order when
/// `strict`; otherwise a weighted draw without replacement, each queue
/// first with probability weight / total. Drawn as the queues sorted by an
/// exponential key of rate weight (the smallest of independent exponentials
/// is queue i's with probability w_i / sum w), in O(n log n): the draw one
/// queue at a time took O(n^2), a millisecond per fetch at 1,000 queues.
pub(super) fn draw(weights: &[u32], strict: bool, rng: &mut impl Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    if strict || weights.len() == 1 {
        return order;
    }
    let keys: Vec<f64> = weights
        .iter()
        .map(|&w| {
            // In (0, 1]: ln(0) would be infinite.
            let u: f64 = 1.0 - rng.random::<f64>();
            -u.ln() / f64::from(w.max(1))
        })
        .collect();
    order.sort_unstable_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_keeps_the_order_given() {
        assert_eq!(draw(&[1, 5, 2], true, &mut rand::rng()), vec![0, 1, 2]);
    }

    #[test]
    fn every_queue_comes_once() {
        let mut rng = rand::rng();
        for _ in 0..100 {
            let mut order = draw(&[1, 3, 2, 7, 1], false, &mut rng);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn the_first_pick_follows_the_weights() {
        let weights = [3, 1, 6];
        let mut rng = rand::rng();
        let mut firsts = [0u32; 3];
        let draws = 20_000;
        for _ in 0..draws {
            firsts[draw(&weights, false, &mut rng)[0]] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let share = f64::from(firsts[i]) / f64::from(draws);
            let want = f64::from(w) / 10.0;
            // 20,000 draws: a standard deviation under 0.004.
            assert!(
                (share - want).abs() < 0.02,
                "queue {i}: {share} against {want}"
            );
        }
    }

    #[test]
    fn the_second_pick_follows_the_weights_of_the_rest() {
        // Given queue 0 first, queue 1 is second with 1 / (1 + 4).
        let mut rng = rand::rng();
        let (mut after_zero, mut one_second) = (0u32, 0u32);
        while after_zero < 10_000 {
            let order = draw(&[5, 1, 4], false, &mut rng);
            if order[0] == 0 {
                after_zero += 1;
                one_second += u32::from(order[1] == 1);
            }
        }
        let share = f64::from(one_second) / 10_000.0;
        assert!((share - 0.2).abs() < 0.02, "{share}");
    }
}
