//! Keyed bijections on `0..n`: they give every account, customer and file position its own
//! identity without a table, so any one of them can be derived again from its index alone.

/// SplitMix64 finaliser: a cheap, well-mixed hash of one word.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of two words, used to derive independent keys from the seed.
pub(super) fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

/// One round: multiply by an odd number, xor-shift, add; each step is invertible modulo 2^bits.
#[derive(Debug, Clone, Copy)]
struct Round {
    mul: u64,
    mul_inverse: u64,
    add: u64,
}

/// A random-looking permutation of `0..n`, with its inverse.
///
/// Four rounds of an invertible mixer on the smallest power of two holding `n`, and cycle
/// walking to stay inside `0..n` (a walk from a value below `n` always comes back below `n`,
/// so the walk is itself a permutation, and walking the inverse undoes it).
#[derive(Debug, Clone)]
pub(super) struct Perm {
    n: u64,
    bits: u32,
    mask: u64,
    shift: u32,
    rounds: [Round; 4],
}

impl Perm {
    /// A permutation of `0..n` chosen by `key` (`n` may be 0: then nothing can be permuted).
    pub(super) fn new(n: u64, key: u64) -> Self {
        // At least 4 bits so that the xor-shift moves something.
        let bits = (u64::BITS - n.saturating_sub(1).leading_zeros()).max(4);
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut rounds = [Round {
            mul: 1,
            mul_inverse: 1,
            add: 0,
        }; 4];
        for (r, round) in (0u64..).zip(rounds.iter_mut()) {
            let mul = mix(key, 2 * r) | 1;
            *round = Round {
                mul,
                mul_inverse: inverse_mod_2_64(mul),
                add: mix(key, 2 * r + 1) & mask,
            };
        }
        Self {
            n,
            bits,
            mask,
            shift: bits / 2,
            rounds,
        }
    }

    fn forward(&self, mut x: u64) -> u64 {
        for round in &self.rounds {
            x = x.wrapping_mul(round.mul) & self.mask;
            x ^= x >> self.shift;
            x = x.wrapping_add(round.add) & self.mask;
        }
        x
    }

    fn backward(&self, mut x: u64) -> u64 {
        for round in self.rounds.iter().rev() {
            x = x.wrapping_sub(round.add) & self.mask;
            x = self.undo_xorshift(x);
            x = x.wrapping_mul(round.mul_inverse) & self.mask;
        }
        x
    }

    fn undo_xorshift(&self, y: u64) -> u64 {
        // Each pass fixes `shift` more high bits.
        let mut x = y;
        for _ in 0..self.bits.div_ceil(self.shift) {
            x = y ^ (x >> self.shift);
        }
        x
    }

    /// The image of `x` (`x < n`).
    pub(super) fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        let mut y = self.forward(x);
        while y >= self.n {
            y = self.forward(y);
        }
        y
    }

    /// The `x` whose image is `y` (`y < n`).
    pub(super) fn invert(&self, y: u64) -> u64 {
        debug_assert!(y < self.n);
        let mut x = self.backward(y);
        while x >= self.n {
            x = self.backward(x);
        }
        x
    }
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
fn inverse_mod_2_64(odd: u64) -> u64 {
    let mut inverse = odd; // correct to 3 bits, since odd * odd = 1 (mod 8)
    for _ in 0..5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
    }
    inverse
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_perm_is_a_bijection_with_inverse() {
        for n in [1u64, 2, 3, 15, 16, 17, 50, 1000, 4097] {
            let perm = Perm::new(n, 7 + n);
            let mut seen = vec![false; usize::try_from(n).unwrap()];
            for x in 0..n {
                let y = perm.apply(x);
                assert!(y < n);
                assert!(!seen[y as usize], "n={n}: {y} twice");
                seen[y as usize] = true;
                assert_eq!(perm.invert(y), x);
            }
        }
        let big = Perm::new(9_900_000_000_000, 1);
        for x in [0, 1, 12_345_678, 9_899_999_999_999] {
            assert_eq!(big.invert(big.apply(x)), x);
        }
    }

    #[test]
    fn generate_perm_depends_on_key() {
        let a: Vec<u64> = (0..50).map(|x| Perm::new(50, 1).apply(x)).collect();
        let b: Vec<u64> = (0..50).map(|x| Perm::new(50, 2).apply(x)).collect();
        assert_ne!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
