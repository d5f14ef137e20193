//! The vocabulary of a generated day: Korean customer names (unique per customer by
//! construction), brokerages, and the instrument master.

use super::perm::{Perm, mix};

/// Surnames with two weight profiles: `real` follows the national distribution (김 about a
/// fifth), `mild` flattens it so that a million customers still fit in the name space.
const SURNAMES: &[(&str, u64, u64)] = &[
    ("김", 215, 3),
    ("이", 147, 3),
    ("박", 84, 2),
    ("최", 47, 2),
    ("정", 43, 2),
    ("강", 24, 1),
    ("조", 21, 1),
    ("윤", 20, 1),
    ("장", 20, 1),
    ("임", 17, 1),
    ("한", 15, 1),
    ("오", 15, 1),
    ("서", 15, 1),
    ("신", 14, 1),
    ("권", 14, 1),
    ("황", 14, 1),
    ("안", 13, 1),
    ("송", 13, 1),
    ("류", 12, 1),
    ("전", 11, 1),
    ("홍", 11, 1),
    ("고", 9, 1),
    ("문", 9, 1),
    ("양", 8, 1),
    ("손", 8, 1),
    ("배", 8, 1),
    ("백", 8, 1),
    ("허", 6, 1),
    ("유", 6, 1),
    ("남", 5, 1),
    ("심", 5, 1),
    ("노", 4, 1),
    ("하", 4, 1),
    ("곽", 4, 1),
    ("성", 4, 1),
    ("차", 4, 1),
    ("주", 4, 1),
    ("우", 4, 1),
    ("구", 4, 1),
    ("민", 3, 1),
    ("진", 3, 1),
    ("지", 3, 1),
    ("엄", 2, 1),
    ("채", 2, 1),
    ("원", 2, 1),
    ("천", 2, 1),
    ("방", 2, 1),
    ("공", 2, 1),
    ("현", 2, 1),
    ("함", 2, 1),
    ("변", 2, 1),
    ("염", 1, 1),
    ("여", 1, 1),
    ("추", 1, 1),
    ("도", 1, 1),
    ("소", 1, 1),
    ("석", 1, 1),
    ("선", 1, 1),
    ("설", 1, 1),
    ("마", 1, 1),
    ("길", 1, 1),
    ("연", 1, 1),
    ("위", 1, 1),
    ("표", 1, 1),
    ("명", 1, 1),
    ("기", 1, 1),
    ("반", 1, 1),
    ("왕", 1, 1),
    ("금", 1, 1),
    ("옥", 1, 1),
    ("육", 1, 1),
    ("인", 1, 1),
    ("맹", 1, 1),
    ("제", 1, 1),
    ("모", 1, 1),
    ("탁", 1, 1),
    ("국", 1, 1),
    ("어", 1, 1),
    ("은", 1, 1),
    ("편", 1, 1),
    ("용", 1, 1),
    ("예", 1, 1),
    ("경", 1, 1),
    ("봉", 1, 1),
    ("사", 1, 1),
    ("부", 1, 1),
    ("남궁", 1, 1),
    ("황보", 1, 1),
    ("제갈", 1, 1),
    ("선우", 1, 1),
];

/// Syllables of given names; any two make a plausible name.
const GIVEN_SYLLABLES: &[&str] = &[
    "가", "각", "간", "갑", "강", "건", "걸", "겸", "경", "계", "고", "곤", "관", "광", "교", "구",
    "국", "군", "권", "귀", "규", "균", "근", "금", "기", "길", "나", "난", "남", "녀", "노", "다",
    "단", "달", "담", "대", "덕", "도", "돈", "동", "두", "득", "라", "란", "래", "량", "려", "련",
    "렬", "령", "례", "로", "록", "룡", "류", "률", "륜", "름", "리", "린", "림", "마", "만", "매",
    "맹", "면", "명", "모", "목", "몽", "무", "문", "미", "민", "배", "백", "범", "벽", "병", "보",
    "복", "본", "봉", "부", "분", "비", "빈", "사", "산", "삼", "상", "새", "서", "석", "선", "설",
    "섬", "섭", "성", "세", "소", "솔", "송", "수", "숙", "순", "술", "숭", "슬", "승", "시", "식",
    "신", "실", "심", "아", "안", "애", "야", "양", "언", "여", "연", "열", "염", "엽", "영", "예",
    "오", "옥", "온", "완", "왕", "요", "용", "우", "욱", "운", "웅", "원", "월", "위", "유", "육",
    "윤", "율", "융", "은", "을", "음", "의", "이", "익", "인", "일", "임", "자", "작", "잠", "장",
    "재", "전", "점", "정", "제", "조", "종", "주", "준", "중", "지", "직", "진", "찬", "창", "채",
    "천", "철", "청", "초", "춘", "충", "치", "탁", "태", "택", "평", "표", "필", "하", "학", "한",
    "해", "향", "허", "혁", "현", "협", "형", "혜", "호", "홍", "화", "환", "활", "황", "회", "효",
    "후", "훈", "휘", "희",
];

/// Brokerages and their share of accounts: the sample's three dominate.
pub(super) const BROKERAGES: &[(&str, u32)] = &[
    ("디셈버증권", 30),
    ("핀트투자증권", 30),
    ("베스트투자", 30),
    ("한결증권", 4),
    ("새봄투자증권", 3),
    ("누리증권", 3),
];

/// The real master of the sample delivery, in its order; `KR7195980002` has a wrong check
/// digit and is kept on purpose (it is real data that must load).
pub(super) const REAL_INSTRUMENTS: &[(&str, &str, &str)] = &[
    ("미국S&P500", "KR7360750004", "미국 주식"),
    ("미국나스닥100", "KR7133690008", "미국 주식"),
    ("미국나스닥바이오", "KR7203780002", "미국섹터 주식"),
    ("미국S&P IT(합성)", "KR7200020006", "미국섹터 주식"),
    ("선진국MSCI World", "KR7251350005", "선진국 주식"),
    ("일본니케이225", "KR7241180009", "선진국 주식"),
    ("베트남VN30", "KR7245710009", "신흥국 주식"),
    ("신흥국MSCI", "KR7195980008", "신흥국 주식"),
    ("전세계MSCI", "KR7195980002", "전세계 주식"),
    ("WTI원유선물", "KR7261220008", "부동산 / 원자재"),
    ("S&P글로벌인프라", "KR7130680002", "부동산 / 원자재"),
    ("단기채권", "KR7153130000", "채권 / 현금"),
    ("미국장기우량회사채", "KR7332620004", "채권 / 현금"),
];

/// The cash balance row of the master.
pub(super) const CASH: (&str, &str, &str) = ("현금", "CASH", "채권 / 현금");

/// Stems of generated instrument names with their asset group. The first two carry a comma
/// and a quote so that a generated master exercises CSV quoting.
pub(super) const INSTRUMENT_STEMS: &[(&str, &str)] = &[
    ("글로벌원유,가스생산기업", "부동산 / 원자재"),
    ("미국\"빅테크\"TOP10", "미국 주식"),
    ("미국배당다우존스", "미국 주식"),
    ("미국필라델피아반도체", "미국섹터 주식"),
    ("미국헬스케어", "미국섹터 주식"),
    ("미국클린에너지", "미국섹터 주식"),
    ("미국리츠", "부동산 / 원자재"),
    ("미국달러SOFR금리", "채권 / 현금"),
    ("미국30년국채", "채권 / 현금"),
    ("유로스탁스50", "선진국 주식"),
    ("독일DAX", "선진국 주식"),
    ("일본TOPIX", "선진국 주식"),
    ("인도니프티50", "신흥국 주식"),
    ("중국CSI300", "신흥국 주식"),
    ("차이나항셍테크", "신흥국 주식"),
    ("대만TWSE", "신흥국 주식"),
    ("금현물", "부동산 / 원자재"),
    ("은선물", "부동산 / 원자재"),
    ("구리실물", "부동산 / 원자재"),
    ("글로벌리츠", "부동산 / 원자재"),
    ("전세계ACWI", "전세계 주식"),
    ("글로벌AI산업", "전세계 주식"),
    ("글로벌메타버스", "전세계 주식"),
    ("종합채권(AA-이상)", "채권 / 현금"),
    ("국고채10년", "채권 / 현금"),
    ("CD금리", "채권 / 현금"),
    ("KOFR금리", "채권 / 현금"),
    ("회사채단기", "채권 / 현금"),
];

/// Suffixes that make stems into distinct products.
const INSTRUMENT_SUFFIXES: &[&str] = &["", "액티브", "(H)", "TR", "(합성)", "인덱스"];

/// The name and group of the `index`-th generated instrument; distinct names for distinct
/// indexes (stem, suffix, then a series number once both are used up).
pub(super) fn generated_instrument(index: u64) -> (String, &'static str) {
    let stems = INSTRUMENT_STEMS.len() as u64;
    let suffixes = INSTRUMENT_SUFFIXES.len() as u64;
    let (stem, group) = INSTRUMENT_STEMS[(index % stems) as usize];
    let suffix = INSTRUMENT_SUFFIXES[((index / stems) % suffixes) as usize];
    let series = index / (stems * suffixes);
    if series == 0 {
        (format!("{stem}{suffix}"), group)
    } else {
        (format!("{stem}{suffix} {}호", series + 1), group)
    }
}

/// Which surname weights a name space uses.
#[derive(Debug, Clone, Copy)]
enum Weights {
    Real,
    Mild,
    Flat,
}

/// A bijection from customer ids `0..capacity` to Korean names.
///
/// The permuted id is split into a surname bucket (bucket sizes follow the weights) and an
/// index within that surname, which a second permutation turns into given-name syllables.
/// Two different ids differ in the surname or in the given name, so names never repeat.
#[derive(Debug, Clone)]
pub(super) struct NameSpace {
    /// (surname, first bucket value, weight), by ascending first bucket value.
    surnames: Vec<(&'static str, u64, u64)>,
    total_weight: u64,
    given_syllables: u32,
    ids: Perm,
    given: Perm,
}

impl NameSpace {
    /// The most realistic name space that holds `customers` distinct names; `None` past
    /// hundreds of millions of customers.
    pub(super) fn for_customers(customers: u64, key: u64) -> Option<Self> {
        let profiles = [
            (Weights::Real, 2),
            (Weights::Mild, 2),
            (Weights::Flat, 2),
            (Weights::Flat, 3),
        ];
        for (weights, given_syllables) in profiles {
            let given_space = (GIVEN_SYLLABLES.len() as u64).pow(given_syllables);
            let mut surnames = Vec::with_capacity(SURNAMES.len());
            let mut total_weight = 0;
            let mut max_weight = 0;
            for &(surname, real, mild) in SURNAMES {
                let weight = match weights {
                    Weights::Real => real,
                    Weights::Mild => mild,
                    Weights::Flat => 1,
                };
                surnames.push((surname, total_weight, weight));
                total_weight += weight;
                max_weight = max_weight.max(weight);
            }
            // Every surname bucket value repeats `per_unit` times; the heaviest surname must
            // still find a distinct given name for each of its customers.
            let per_unit = given_space / max_weight;
            let capacity = total_weight * per_unit;
            if capacity >= customers {
                return Some(Self {
                    surnames,
                    total_weight,
                    given_syllables,
                    ids: Perm::new(capacity, mix(key, 1)),
                    given: Perm::new(given_space, mix(key, 2)),
                });
            }
        }
        None
    }

    /// Appends the name of `customer` (which must be below the capacity) to `out`.
    pub(super) fn write_name(&self, customer: u64, out: &mut String) {
        let permuted = self.ids.apply(customer);
        let bucket = permuted % self.total_weight;
        let round = permuted / self.total_weight;
        let at = self
            .surnames
            .partition_point(|&(_, start, _)| start <= bucket)
            - 1;
        let (surname, start, weight) = self.surnames[at];
        // Distinct (round, bucket) within one surname give distinct indexes below
        // per_unit * weight <= given_space.
        let within = round * weight + (bucket - start);
        let mut given = self.given.apply(within);
        out.push_str(surname);
        let base = GIVEN_SYLLABLES.len() as u64;
        let mut divisor = base.pow(self.given_syllables - 1);
        for _ in 0..self.given_syllables {
            out.push_str(GIVEN_SYLLABLES[(given / divisor) as usize]);
            given %= divisor;
            divisor = (divisor / base).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generate_vocabulary_has_no_repeats() {
        let syllables: HashSet<_> = GIVEN_SYLLABLES.iter().collect();
        assert_eq!(syllables.len(), GIVEN_SYLLABLES.len());
        let surnames: HashSet<_> = SURNAMES.iter().map(|s| s.0).collect();
        assert_eq!(surnames.len(), SURNAMES.len());
        let names: HashSet<_> = (0..2000).map(|i| generated_instrument(i).0).collect();
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn generate_names_are_unique_in_every_profile() {
        for customers in [50u64, 300_000, 2_000_000, 10_000_000] {
            let space = NameSpace::for_customers(customers, 9).unwrap();
            let mut seen = HashSet::new();
            let mut name = String::new();
            // The first ids and the last ones (where buckets are fullest).
            let ids = (0..20_000.min(customers))
                .chain(customers.saturating_sub(20_000).max(20_000)..customers);
            for id in ids {
                name.clear();
                space.write_name(id, &mut name);
                let chars = name.chars().count();
                assert!((3..=5).contains(&chars), "{name}");
                assert!(
                    seen.insert(name.clone()),
                    "{name} twice ({customers} customers)"
                );
            }
        }
    }

    #[test]
    fn generate_small_days_use_the_real_surname_distribution() {
        let space = NameSpace::for_customers(10_000, 3).unwrap();
        let mut name = String::new();
        let kim = (0..10_000)
            .filter(|&id| {
                name.clear();
                space.write_name(id, &mut name);
                name.starts_with('김')
            })
            .count();
        assert!((1500..2800).contains(&kim), "{kim} 김 of 10000");
    }
}
