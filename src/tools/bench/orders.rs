//! Synthetic orders and their financial reference rows, deterministic so runs compare: keys in
//! a random or ascending order, with a share of rejects of four kinds.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

const COUNTRIES: &[(&str, &str)] = &[
    ("Azerbaijan", "Middle East and North Africa"),
    ("Panama", "Central America and the Caribbean"),
    ("Sao Tome and Principe", "Sub-Saharan Africa"),
    ("Norway", "Europe"),
    ("Japan", "Asia"),
    ("Australia", "Australia and Oceania"),
    ("Canada", "North America"),
];
const ITEMS: &[&str] = &["Snacks", "Cosmetics", "Fruits", "Personal Care", "Household", "Office Supplies", "Baby Food"];

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How the generated keys are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyOrder {
    /// Unique keys in a random order, the reference in another random order, and a share of
    /// rejects: what real files look like.
    #[default]
    Random,
    /// Ascending keys, the reference in the same order, no rejects: the best case.
    Sequential,
}

impl KeyOrder {
    /// Its name in the measurements.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrder::Random => "random",
            KeyOrder::Sequential => "sequential",
        }
    }
}

/// The share of generated orders that are rejected (random key order only): an impossible
/// date, a missing column, an over-long field, a key missing from the reference, in turn.
pub const REJECT_SHARE: f64 = 0.005;

/// One synthetic order's line and its reference row.
struct Order {
    line: String,
    financial: String,
}

fn order(uuid: u64, rng: &mut Rng, reject: Option<u64>) -> Order {
    let (country, region) = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
    let item = ITEMS[rng.below(ITEMS.len() as u64) as usize];
    let channel = if rng.below(2) == 0 { "Online" } else { "Offline" };
    let priority = ["C", "H", "L", "M"][rng.below(4) as usize];
    let (m, d, y) = (1 + rng.below(12), 1 + rng.below(28), 10 + rng.below(10));
    let ship_d = 1 + rng.below(28);
    let quoted = if country.contains(' ') { format!("\"{country}\"") } else { country.to_string() };
    let line = match reject {
        Some(0) => format!("{uuid},{quoted},{item},{channel},{priority},2/30/{y},{region},{m}/{ship_d}/{y}"),
        Some(1) => format!("{uuid},{quoted},{item},{channel},{priority},{m}/{d}/{y},{region}"),
        Some(2) => {
            let long = "X".repeat(60);
            format!("{uuid},{long},{item},{channel},{priority},{m}/{d}/{y},{region},{m}/{ship_d}/{y}")
        }
        _ => format!("{uuid},{quoted},{item},{channel},{priority},{m}/{d}/{y},{region},{m}/{ship_d}/{y}"),
    };
    let units = 1 + rng.below(10_000);
    let price = (1 + rng.below(60_000)) as f64 / 100.0;
    let cost = (price * 0.7 * 100.0).round() / 100.0;
    let revenue = (units as f64 * price * 100.0).round() / 100.0;
    let total_cost = (units as f64 * cost * 100.0).round() / 100.0;
    let financial = format!("{uuid},{units},{price},{cost},{revenue},{total_cost},{:.2}", revenue - total_cost);
    Order { line, financial }
}

/// Write `n` synthetic orders (`orders.csv`) and their financial reference rows
/// (`financial.csv`), keys ordered as `keys` says. Orders stream to disk; with random keys
/// the reference rows are shuffled through bucket files (a share of them in memory at a time),
/// so that the generator's memory does not grow with `n` beyond its keys.
pub fn generate(dir: &Path, n: u64, keys: KeyOrder) -> Result<()> {
    let io =
        |e: std::io::Error| Error::config("--data-dir", format!("cannot write bench data in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut orders = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("orders.csv")).map_err(io)?);
    let mut fin = BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("financial.csv")).map_err(io)?);
    writeln!(orders, "uuid,Country,Item Type,Sales Channel,Order Priority,Order Date,Region,Ship Date").map_err(io)?;
    writeln!(fin, "uuid,unitsSold,unitPrice,unitCost,totalRevenue,totalCost,totalProfit").map_err(io)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Keys are 100,000,000 + a permutation of 0..n: unique, nine digits.
    let mut ids: Vec<u32> = (0..n as u32).collect();
    let mut shuffle = fastrand::Rng::with_seed(0x5eed);
    if keys == KeyOrder::Random {
        shuffle.shuffle(&mut ids);
    }
    let every = (1.0 / REJECT_SHARE) as u64;
    // Reference rows go to a random bucket file each; each bucket is then shuffled in memory.
    let buckets = (n / 100_000).clamp(1, 256) as usize;
    let bucket_path = |b: usize| dir.join(format!(".financial-{b}.tmp"));
    let mut financial: Vec<BufWriter<std::fs::File>> = match keys {
        KeyOrder::Random => (0..buckets)
            .map(|b| std::fs::File::create(bucket_path(b)).map(|f| BufWriter::with_capacity(64 << 10, f)))
            .collect::<std::io::Result<_>>()
            .map_err(io)?,
        KeyOrder::Sequential => Vec::new(),
    };
    for (i, id) in (0u64..).zip(&ids) {
        let reject = (keys == KeyOrder::Random && i % every == every / 2).then_some((i / every) % 4);
        let o = order(100_000_000 + u64::from(*id), &mut rng, reject);
        writeln!(orders, "{}", o.line).map_err(io)?;
        match keys {
            KeyOrder::Sequential => writeln!(fin, "{}", o.financial).map_err(io)?,
            // The fourth kind of reject is an order whose key the reference lacks.
            KeyOrder::Random if reject == Some(3) => {}
            KeyOrder::Random => writeln!(financial[shuffle.usize(..buckets)], "{}", o.financial).map_err(io)?,
        }
    }
    // The reference in an order of its own.
    for (b, mut bucket) in financial.into_iter().enumerate() {
        bucket.flush().map_err(io)?;
        drop(bucket);
        let text = std::fs::read_to_string(bucket_path(b)).map_err(io)?;
        let mut rows: Vec<&str> = text.lines().collect();
        shuffle.shuffle(&mut rows);
        for row in rows {
            writeln!(fin, "{row}").map_err(io)?;
        }
        std::fs::remove_file(bucket_path(b)).map_err(io)?;
    }
    orders.flush().map_err(io)?;
    fin.flush().map_err(io)?;
    Ok(())
}

/// Write `orders-update.csv`: a random `share` of the orders in `dir`'s `orders.csv`, in
/// another random order, each with another priority and ship date (a daily update of an
/// existing table). Returns how many.
pub fn generate_update(dir: &Path, share: f64) -> Result<u64> {
    let io =
        |e: std::io::Error| Error::config("--data-dir", format!("cannot write bench data in {}: {e}", dir.display()));
    let text = std::fs::read(dir.join("orders.csv")).map_err(io)?;
    let bad = |e: csv::Error| Error::internal("csv", "orders.csv", e);
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(std::io::Cursor::new(&text[..]));
    let header = rdr.byte_headers().map_err(bad)?.clone();
    let mut pick = fastrand::Rng::with_seed(0xda7);
    // Where each chosen row starts, not the rows: the share may be the whole file, and the
    // memory this holds must not count against the update job measured next.
    let mut chosen = Vec::new();
    let mut row = csv::ByteRecord::new();
    loop {
        let at = rdr.position().clone();
        if !rdr.read_byte_record(&mut row).map_err(bad)? {
            break;
        }
        if pick.f64() < share {
            chosen.push(at);
        }
    }
    pick.shuffle(&mut chosen);
    let file = std::fs::File::create(dir.join("orders-update.csv")).map_err(io)?;
    let mut out = csv::WriterBuilder::new().flexible(true).from_writer(BufWriter::with_capacity(1 << 20, file));
    let fail = |e: csv::Error| Error::internal("csv", "orders-update.csv", e);
    out.write_byte_record(&header).map_err(fail)?;
    for at in &chosen {
        rdr.seek(at.clone()).map_err(bad)?;
        rdr.read_byte_record(&mut row).map_err(bad)?;
        if row.len() == 8 {
            let mut f: Vec<&[u8]> = row.iter().collect();
            let priority = ["C", "H", "L", "M"][pick.usize(0..4)];
            let ship = format!("12/{}/19", 1 + pick.u32(0..28));
            f[4] = priority.as_bytes();
            f[7] = ship.as_bytes();
            out.write_record(&f).map_err(fail)?;
        } else {
            out.write_byte_record(&row).map_err(fail)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(chosen.len() as u64)
}
