//! Deterministic synthetic delivery records: the data behind the seed models and the demo.
//!
//! A [`Generator`] turns a `u64` seed into an endless, reproducible stream of food-delivery
//! records ([`Delivery`]): eight features a scoring service would see when an order is placed,
//! plus the delivery time it really took (the training target). The same seed gives the same
//! records: the generator uses its own PRNG (xoshiro256\*\* seeded through splitmix64), and
//! every value is rounded to a short decimal, which absorbs any last-bit difference between
//! platforms' `ln`, `exp` and `cos`.
//!
//! The target has city-specific effects so that one model per city is worth having: traffic
//! weighs most in London, rain in Amsterdam, and everywhere lunch and dinner rush hours and long
//! trips add time nonlinearly, so trees and MLPs beat a straight line.
//!
//! ```
//! use keyscore::synth::{Generator, FEATURES};
//!
//! let mut generator = Generator::new(7);
//! let record = generator.next_record();
//! assert_eq!(record.id, "r-0000001");
//! assert_eq!(record.features.len(), FEATURES.len());
//! let again = Generator::new(7).next_record();
//! assert_eq!(record, again);
//! ```

/// Feature names, in the order of [`Delivery::features`] and of the seed models' inputs.
pub const FEATURES: [&str; 8] = [
    "distance_km",
    "items",
    "hour",
    "is_weekend",
    "rain_mm",
    "courier_rating",
    "traffic_index",
    "prep_time_min",
];

/// Cities the generator produces, each with its own delivery-time behaviour.
pub const CITIES: [&str; 8] = [
    "paris",
    "london",
    "berlin",
    "madrid",
    "rome",
    "vienna",
    "lisbon",
    "amsterdam",
];

/// Minutes promised to the customer: a delivery that takes longer is [`Delivery::late`].
pub const PROMISED_MINUTES: f64 = 35.0;

/// One synthetic delivery: what is known when the order is placed, and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Sequential record id, `r-0000001` for a generator's first record.
    pub id: String,
    /// One of [`CITIES`].
    pub city: &'static str,
    /// Feature values in [`FEATURES`] order.
    pub features: [f64; 8],
    /// Actual delivery time in minutes (the regression target), rounded to 0.1.
    pub minutes: f64,
    /// Whether `minutes` exceeded [`PROMISED_MINUTES`] (the classification target).
    pub late: bool,
}

impl Delivery {
    /// The record as one line of JSON, as a producer would publish it: `id`, `city` and the
    /// eight features by name. The targets are not included.
    pub fn to_json(&self) -> String {
        let mut line = format!(r#"{{"id":"{}","city":"{}""#, self.id, self.city);
        for (name, value) in FEATURES.iter().zip(self.features) {
            line.push_str(&format!(r#","{name}":{value}"#));
        }
        line.push('}');
        line
    }
}

/// How each city's deliveries behave.
struct CityProfile {
    /// Probability that it rains at the time of an order.
    rain_chance: f64,
    /// Baseline traffic index.
    traffic_base: f64,
    /// Riding minutes per km on an empty road.
    minutes_per_km: f64,
    /// How much a fully congested road (`traffic_index` 1) multiplies riding time.
    traffic_weight: f64,
    /// Minutes added per sqrt(mm) of rain.
    rain_weight: f64,
    /// Extra minutes at the peak of the lunch and dinner rushes.
    rush_minutes: f64,
}

const PROFILES: [CityProfile; 8] = [
    // paris
    CityProfile {
        rain_chance: 0.20,
        traffic_base: 0.45,
        minutes_per_km: 2.6,
        traffic_weight: 0.8,
        rain_weight: 1.2,
        rush_minutes: 6.0,
    },
    // london
    CityProfile {
        rain_chance: 0.30,
        traffic_base: 0.55,
        minutes_per_km: 2.4,
        traffic_weight: 1.8,
        rain_weight: 1.0,
        rush_minutes: 5.0,
    },
    // berlin
    CityProfile {
        rain_chance: 0.20,
        traffic_base: 0.35,
        minutes_per_km: 2.3,
        traffic_weight: 0.6,
        rain_weight: 1.0,
        rush_minutes: 4.0,
    },
    // madrid
    CityProfile {
        rain_chance: 0.07,
        traffic_base: 0.45,
        minutes_per_km: 2.5,
        traffic_weight: 0.9,
        rain_weight: 1.5,
        rush_minutes: 7.0,
    },
    // rome
    CityProfile {
        rain_chance: 0.10,
        traffic_base: 0.55,
        minutes_per_km: 2.8,
        traffic_weight: 1.2,
        rain_weight: 1.8,
        rush_minutes: 8.0,
    },
    // vienna
    CityProfile {
        rain_chance: 0.18,
        traffic_base: 0.30,
        minutes_per_km: 2.2,
        traffic_weight: 0.5,
        rain_weight: 1.0,
        rush_minutes: 4.0,
    },
    // lisbon
    CityProfile {
        rain_chance: 0.12,
        traffic_base: 0.40,
        minutes_per_km: 3.0,
        traffic_weight: 0.8,
        rain_weight: 1.5,
        rush_minutes: 5.0,
    },
    // amsterdam
    CityProfile {
        rain_chance: 0.35,
        traffic_base: 0.25,
        minutes_per_km: 2.0,
        traffic_weight: 0.4,
        rain_weight: 3.5,
        rush_minutes: 4.0,
    },
];

/// Relative order volume by hour of day: quiet nights, lunch and dinner peaks.
const HOUR_WEIGHTS: [f64; 24] = [
    1.0, 0.6, 0.4, 0.2, 0.1, 0.1, 0.3, 0.6, 1.0, 1.2, 1.5, 3.0, 5.0, 5.0, 3.0, 1.8, 1.8, 2.5, 4.5,
    6.0, 5.5, 3.5, 2.5, 1.6,
];

/// A deterministic, seedable source of [`Delivery`] records.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Xoshiro256StarStar,
    next_id: u64,
    rain_surcharge: f64,
}

impl Generator {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256StarStar::new(seed),
            next_id: 1,
            rain_surcharge: 0.0,
        }
    }

    /// Adds `minutes_per_mm` minutes per mm of rain to every delivery time, everywhere: the
    /// "later" world in which a new safety rule slows couriers down in the rain. The features
    /// are unchanged; only the targets move.
    pub fn with_rain_surcharge(mut self, minutes_per_mm: f64) -> Self {
        self.rain_surcharge = minutes_per_mm;
        self
    }

    /// The next record, from a city drawn uniformly from [`CITIES`].
    pub fn next_record(&mut self) -> Delivery {
        let city = (self.rng.next_u64() % CITIES.len() as u64) as usize;
        self.record_for(city)
    }

    /// The next record for `city`, or `None` if `city` is not one of [`CITIES`].
    pub fn next_for_city(&mut self, city: &str) -> Option<Delivery> {
        let index = CITIES.iter().position(|c| *c == city)?;
        // Draw the city as `next_record` does, so both use the same number of random values.
        self.rng.next_u64();
        Some(self.record_for(index))
    }

    fn record_for(&mut self, city: usize) -> Delivery {
        let profile = &PROFILES[city];
        let rng = &mut self.rng;

        let hour = rng.weighted_index(&HOUR_WEIGHTS) as f64;
        let is_weekend = if rng.uniform() < 2.0 / 7.0 { 1.0 } else { 0.0 };
        let distance_km = round_to((1.1 + 0.65 * rng.normal()).exp().clamp(0.3, 15.0), 10.0);
        let items = (1.0 + (-2.2 * rng.uniform_open().ln()).floor()).min(12.0);
        let rain_mm = if rng.uniform() < profile.rain_chance {
            round_to((-3.0 * rng.uniform_open().ln()).clamp(0.1, 20.0), 10.0)
        } else {
            rng.uniform(); // keep the number of draws per record fixed
            0.0
        };
        let courier_rating = round_to((4.5 + 0.3 * rng.normal()).clamp(3.0, 5.0), 10.0);
        let traffic_index = round_to(
            (profile.traffic_base + 0.25 * rush(hour) - 0.25 * night(hour) + 0.12 * rng.normal()
                - 0.1 * is_weekend)
                .clamp(0.0, 1.0),
            100.0,
        );
        let prep_time_min = round_to(
            (7.0 + 1.6 * items + 3.0 * rng.normal()).clamp(5.0, 40.0),
            10.0,
        );
        let noise = rng.normal();

        let riding = distance_km
            * profile.minutes_per_km
            * (1.0 + profile.traffic_weight * traffic_index * traffic_index)
            + 0.15 * (distance_km - 6.0).max(0.0).powi(2);
        let waiting = 0.8 * prep_time_min + 0.3 * items;
        let rush_delay = profile.rush_minutes * rush(hour) * (1.0 + 0.5 * is_weekend);
        let weather = profile.rain_weight * rain_mm.sqrt() + self.rain_surcharge * rain_mm;
        let courier = 3.0 * (4.5 - courier_rating);
        let minutes = 6.0 + riding + waiting + rush_delay + weather + courier - 2.0 * night(hour)
            + 2.5 * noise;
        let minutes = round_to(minutes.max(5.0), 10.0);

        let id = format!("r-{:07}", self.next_id);
        self.next_id += 1;
        Delivery {
            id,
            city: CITIES[city],
            features: [
                distance_km,
                items,
                hour,
                is_weekend,
                rain_mm,
                courier_rating,
                traffic_index,
                prep_time_min,
            ],
            minutes,
            late: minutes > PROMISED_MINUTES,
        }
    }
}

/// How deep into a lunch (12:00-13:59) or dinner (19:00-20:59) rush an hour is, 0 to 1.
fn rush(hour: f64) -> f64 {
    match hour as u32 {
        12 | 13 | 19 | 20 => 1.0,
        11 | 14 | 18 | 21 => 0.5,
        _ => 0.0,
    }
}

/// 1 for the empty-road hours 0:00-5:59, else 0.
fn night(hour: f64) -> f64 {
    if hour < 6.0 {
        1.0
    } else {
        0.0
    }
}

/// Rounds to a multiple of `1 / per_unit` (`per_unit` 10 keeps one decimal).
fn round_to(x: f64, per_unit: f64) -> f64 {
    // Dividing the rounded integer gives the f64 nearest to the short decimal, which is what
    // a JSON parser returns for it.
    (x * per_unit).round() / per_unit
}

/// The project's PRNG: xoshiro256\*\* (Blackman and Vigna), seeded with [`SplitMix64`].
///
/// Its output for a seed is a contract: `seed/` was generated from it (through [`Generator`]),
/// so changing any of its methods changes `seed/`. Benches and examples that need random data
/// draw from it rather than from a generator of their own.
///
/// ```
/// use keyscore::synth::Xoshiro256StarStar;
///
/// let mut rng = Xoshiro256StarStar::new(1);
/// let x = rng.range(-1.0, 1.0);
/// assert!((-1.0..1.0).contains(&x));
/// assert!(rng.below(10) < 10);
/// assert_eq!(Xoshiro256StarStar::new(1).range(-1.0, 1.0), x);
/// ```
#[derive(Debug, Clone)]
pub struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut splitmix = SplitMix64::new(seed);
        Self {
            s: [
                splitmix.next_u64(),
                splitmix.next_u64(),
                splitmix.next_u64(),
                splitmix.next_u64(),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }

    /// Uniform in (0, 1], safe to take the logarithm of.
    pub fn uniform_open(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform in `0..n` (by remainder: the bias, at most `n` in 2^64, does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal by the Box-Muller transform (one of the pair is used).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform_open();
        let u2 = self.uniform();
        box_muller(u1, u2)
    }

    /// An index drawn with probability proportional to `weights`.
    pub fn weighted_index(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut target = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if target < *w {
                return i;
            }
            target -= w;
        }
        weights.len() - 1
    }
}

/// splitmix64 (Steele, Lea and Flood, with Vigna's constants): seeds [`Xoshiro256StarStar`].
///
/// Also a generator of its own where a sequence was pinned to it: `examples/make_seed.rs` draws
/// the MLPs' initial weights and minibatch order from it, so `seed/` depends on its output too.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }

    /// Standard normal by the Box-Muller transform, as [`Xoshiro256StarStar::normal`].
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        box_muller(u1, u2)
    }
}

/// The top 53 bits of `bits` as a number in [0, 1).
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal from `u1` in (0, 1] and `u2` in [0, 1).
fn box_muller(u1: f64, u2: f64) -> f64 {
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: u64, n: usize) -> Vec<Delivery> {
        let mut generator = Generator::new(seed);
        (0..n).map(|_| generator.next_record()).collect()
    }

    #[test]
    fn same_seed_gives_same_records() {
        assert_eq!(sample(42, 500), sample(42, 500));
    }

    #[test]
    fn different_seeds_give_different_records() {
        assert_ne!(sample(1, 20), sample(2, 20));
    }

    #[test]
    fn ids_are_sequential() {
        let records = sample(3, 12);
        assert_eq!(records[0].id, "r-0000001");
        assert_eq!(records[11].id, "r-0000012");
    }

    #[test]
    fn first_records_are_pinned() {
        // Pins the exact stream: a change here changes every seed file, which must then be
        // regenerated with `cargo run --release --example make_seed`.
        let first = Generator::new(1).next_record();
        assert_eq!(first.to_json(), PINNED_FIRST_RECORD);
    }

    const PINNED_FIRST_RECORD: &str = r#"{"id":"r-0000001","city":"vienna","distance_km":2.4,"items":1,"hour":17,"is_weekend":0,"rain_mm":1.4,"courier_rating":3.9,"traffic_index":0.57,"prep_time_min":5.2}"#;

    #[test]
    fn features_stay_in_their_ranges() {
        let mut cities = std::collections::BTreeSet::new();
        let (mut rainy, mut late) = (0, 0);
        let records = sample(11, 20_000);
        for r in &records {
            let [distance, items, hour, weekend, rain, rating, traffic, prep] = r.features;
            assert!((0.3..=15.0).contains(&distance), "{r:?}");
            assert!(
                (1.0..=12.0).contains(&items) && items.fract() == 0.0,
                "{r:?}"
            );
            assert!((0.0..=23.0).contains(&hour) && hour.fract() == 0.0, "{r:?}");
            assert!(weekend == 0.0 || weekend == 1.0, "{r:?}");
            assert!((0.0..=20.0).contains(&rain), "{r:?}");
            assert!((3.0..=5.0).contains(&rating), "{r:?}");
            assert!((0.0..=1.0).contains(&traffic), "{r:?}");
            assert!((5.0..=40.0).contains(&prep), "{r:?}");
            assert!(r.minutes >= 5.0 && r.minutes < 180.0, "{r:?}");
            assert_eq!(r.late, r.minutes > PROMISED_MINUTES);
            cities.insert(r.city);
            rainy += usize::from(rain > 0.0);
            late += usize::from(r.late);
        }
        assert_eq!(cities.len(), CITIES.len());
        // Mostly dry, sometimes late: both classes and both weathers are well represented.
        let n = records.len();
        assert!(rainy > n / 20 && rainy < n / 2, "rainy {rainy} of {n}");
        assert!(late > n / 10 && late < n / 2, "late {late} of {n}");
    }

    #[test]
    fn next_for_city_keeps_to_the_city() {
        let mut generator = Generator::new(5);
        for city in CITIES {
            for _ in 0..50 {
                assert_eq!(generator.next_for_city(city).unwrap().city, city);
            }
        }
        assert!(generator.next_for_city("oslo").is_none());
    }

    #[test]
    fn rain_surcharge_moves_only_rainy_targets() {
        let mut plain = Generator::new(9);
        let mut surcharged = Generator::new(9).with_rain_surcharge(2.0);
        for _ in 0..500 {
            let (a, b) = (plain.next_record(), surcharged.next_record());
            assert_eq!(a.features, b.features);
            if a.features[4] > 0.0 {
                assert!(b.minutes > a.minutes, "{a:?} {b:?}");
            } else {
                assert_eq!(a.minutes, b.minutes);
            }
        }
    }

    #[test]
    fn json_line_has_id_city_and_every_feature() {
        for r in sample(13, 200) {
            let line = r.to_json();
            assert!(!line.contains('\n'));
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 2 + FEATURES.len(), "{line}");
            assert_eq!(object["id"], r.id.as_str());
            assert_eq!(object["city"], r.city);
            for (name, x) in FEATURES.iter().zip(r.features) {
                // Exact: the rounded features survive the trip through text.
                assert_eq!(object[*name].as_f64(), Some(x), "{name} in {line}");
            }
            assert!(object.get("minutes").is_none() && object.get("late").is_none());
        }
    }
}
