//! The value rules WeChat applies to subscribe-message data (47003 when one is broken),
//! by keyword type: the key without its trailing digits (`thing1` → `thing`).
//!
//! | type | value |
//! | --- | --- |
//! | `thing` | ≤ 20 Chinese, letters, digits, symbols |
//! | `number` | ≤ 32 digits, one decimal point allowed between digits |
//! | `letter` | ≤ 32 letters |
//! | `symbol` | ≤ 5 symbols |
//! | `character_string` | ≤ 32 letters, digits, symbols |
//! | `time` | `15:01` / `15:01:30`, optionally after a date; `a~b` ranges |
//! | `date` | `2019年10月1日`, `2019-10-01` (or `/`, `.`), `2019-10`, `10-01`, optionally with a time; `a~b` ranges |
//! | `amount` | a currency symbol, ≤ 10 digits (one decimal point), optionally `元` |
//! | `phone_number` | ≤ 17 digits and symbols |
//! | `car_number` | ≤ 8; Chinese only first or last, letters and digits between |
//! | `name` | ≤ 10 when any Chinese is in it, else ≤ 20 letters and symbols |
//! | `phrase` | ≤ 5 Chinese |
//! | `enum_string` | one of the template's values |
//!
//! No value may be empty or hold a control character. Lengths count Unicode scalar
//! values. Letters and digits are ASCII; symbols are printable ASCII punctuation and space
//! and the common punctuation blocks (Latin-1 signs, general punctuation, currency,
//! letterlike, arrows, maths, circled numbers, shapes, ★☆, CJK punctuation, full-width
//! forms). Anything else (emoji, accented or other-script letters) fits no type.

/// Whether WeChat accepts `value` for the keyword `key`. `enum_values`: the template's
/// list for an `enum_string` key (`None`: no list known, any value).
pub fn subscribe_value_ok(key: &str, value: &str, enum_values: Option<&[String]>) -> bool {
    let chars: Vec<char> = value.chars().collect();
    if chars.is_empty() || chars.iter().any(|c| is_control(*c)) {
        return false;
    }
    let n = chars.len();
    let all = |f: fn(char) -> bool| chars.iter().all(|c| f(*c));
    match key.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "thing" => n <= 20 && all(|c| is_han(c) || c.is_ascii_alphanumeric() || is_symbol(c)),
        "number" => n <= 32 && plain_decimal(value),
        "letter" => n <= 32 && all(|c| c.is_ascii_alphabetic()),
        "symbol" => n <= 5 && all(is_symbol),
        "character_string" => n <= 32 && all(|c| c.is_ascii_alphanumeric() || is_symbol(c)),
        "phone_number" => n <= 17 && all(|c| c.is_ascii_digit() || is_symbol(c)),
        "phrase" => n <= 5 && all(is_han),
        "name" => {
            let limit = if chars.iter().any(|c| is_han(*c)) {
                10
            } else {
                20
            };
            n <= limit && all(|c| is_han(c) || c.is_ascii_alphabetic() || is_symbol(c))
        }
        "car_number" => {
            n <= 8
                && chars.iter().enumerate().all(|(i, c)| {
                    c.is_ascii_alphanumeric() || (is_han(*c) && (i == 0 || i == n - 1))
                })
        }
        "time" => range_ok(value, |s| {
            let (date, time) = split_date_time(s);
            date.is_none_or(date_ok) && time.is_some_and(time_ok)
        }),
        "date" => range_ok(value, |s| {
            let (date, time) = split_date_time(s);
            date.is_some_and(date_ok) && time.is_none_or(time_ok)
        }),
        "amount" => amount_ok(value),
        "enum_string" | "enum" => enum_values.is_none_or(|list| list.iter().any(|v| v == value)),
        _ => true,
    }
}

fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn is_han(c: char) -> bool {
    let u = u32::from(c);
    (0x3400..=0x4DBF).contains(&u)
        || (0x4E00..=0x9FFF).contains(&u)
        || (0xF900..=0xFAFF).contains(&u)
        || (0x20000..=0x323AF).contains(&u)
}

fn is_symbol(c: char) -> bool {
    if c.is_ascii() {
        return c == ' ' || c.is_ascii_punctuation();
    }
    const BLOCKS: [(u32, u32); 13] = [
        (0xA1, 0xBF),
        (0xD7, 0xD7),
        (0xF7, 0xF7),
        (0x2010, 0x2027),
        (0x2030, 0x205E),
        (0x20A0, 0x20C0),
        (0x2100, 0x22FF),
        (0x2460, 0x24FF),
        (0x25A0, 0x25FF),
        (0x2605, 0x2606),
        (0x3000, 0x303F),
        (0xFF01, 0xFF65),
        (0xFFE0, 0xFFE6),
    ];
    let u = u32::from(c);
    BLOCKS.iter().any(|(lo, hi)| (*lo..=*hi).contains(&u))
}

fn is_currency(c: char) -> bool {
    matches!(
        c,
        '$' | '¢' | '£' | '¤' | '¥' | '฿' | '﹩' | '＄' | '￠' | '￡' | '￥' | '￦'
    ) || ('\u{20A0}'..='\u{20C0}').contains(&c)
}

/// Digits, optionally one `.` with digits on both sides.
fn plain_decimal(s: &str) -> bool {
    let mut parts = s.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    parts.next().is_none() && digits(whole) && fraction.is_none_or(digits)
}

fn amount_ok(v: &str) -> bool {
    let Some(first) = v.chars().next() else {
        return false;
    };
    if !is_currency(first) {
        return false;
    }
    let body = &v[first.len_utf8()..];
    let body = body.strip_suffix('元').unwrap_or(body);
    plain_decimal(body) && body.chars().filter(char::is_ascii_digit).count() <= 10
}

fn range_ok(v: &str, one: impl Fn(&str) -> bool) -> bool {
    let sides: Vec<&str> = v.split('~').collect();
    sides.len() <= 2 && sides.iter().all(|s| one(s.trim_matches(' ')))
}

/// `2019-10-01 15:01` → (date, time); `15:01` → (None, time); `2019年10月1日15:01` too.
fn split_date_time(s: &str) -> (Option<&str>, Option<&str>) {
    if let Some(end) = s.find('日') {
        let (date, rest) = s.split_at(end + '日'.len_utf8());
        let rest = rest.trim_start_matches(' ');
        return (Some(date), (!rest.is_empty()).then_some(rest));
    }
    match s.split_once(' ') {
        Some((date, time)) => (Some(date), Some(time.trim_start_matches(' '))),
        None if s.contains(':') => (None, Some(s)),
        None => (Some(s), None),
    }
}

fn time_ok(t: &str) -> bool {
    let f: Vec<&str> = t.split(':').collect();
    let num = |s: &str, max: u32, widths: &[usize]| {
        widths.contains(&s.len())
            && s.chars().all(|c| c.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|v| v <= max)
    };
    match f.as_slice() {
        [h, m] => num(h, 23, &[1, 2]) && num(m, 59, &[2]),
        [h, m, s] => num(h, 23, &[1, 2]) && num(m, 59, &[2]) && num(s, 59, &[2]),
        _ => false,
    }
}

fn date_ok(d: &str) -> bool {
    let num = |s: &str, widths: &[usize]| -> Option<u32> {
        (widths.contains(&s.len()) && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let ymd = |y: Option<u32>, m: u32, d: u32| {
        let days = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 => match y {
                Some(y) if !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) => 28,
                _ => 29,
            },
            _ => return false,
        };
        (1..=days).contains(&d)
    };
    if let Some(rest) = d.strip_suffix('日') {
        let Some((y, rest)) = rest.split_once('年') else {
            return false;
        };
        let Some((m, day)) = rest.split_once('月') else {
            return false;
        };
        return match (num(y, &[4]), num(m, &[1, 2]), num(day, &[1, 2])) {
            (Some(y), Some(m), Some(day)) => ymd(Some(y), m, day),
            _ => false,
        };
    }
    for sep in ['-', '/', '.'] {
        let f: Vec<&str> = d.split(sep).collect();
        if f.len() < 2 {
            continue;
        }
        return match f.as_slice() {
            [y, m, day] => match (num(y, &[4]), num(m, &[1, 2]), num(day, &[1, 2])) {
                (Some(y), Some(m), Some(day)) => ymd(Some(y), m, day),
                _ => false,
            },
            [y, m] if y.len() == 4 => match (num(y, &[4]), num(m, &[1, 2])) {
                (Some(y), Some(m)) => ymd(Some(y), m, 1),
                _ => false,
            },
            [m, day] => match (num(m, &[1, 2]), num(day, &[1, 2])) {
                (Some(m), Some(day)) => ymd(None, m, day),
                _ => false,
            },
            _ => false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_accepts_and_refuses_what_wechat_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("thing1", "Your order shipped", true),
            ("thing1", &"字".repeat(20), true),
            ("thing1", &"x".repeat(21), false),
            ("thing1", "two\nlines", false),
            ("thing1", "", false),
            ("thing1", "emoji 😀", false),
            ("number2", "12345.67", true),
            ("number2", "12a", false),
            ("number2", &"1".repeat(33), false),
            ("letter3", "abc", true),
            ("letter3", "abc1", false),
            ("symbol4", "★、", true),
            ("symbol4", "%%%%%%", false),
            ("character_string5", "ORDER-2026-0001", true),
            ("character_string5", "订单1", false),
            ("time6", "2026-11-24 10:00", true),
            ("time6", "10:00~12:30", true),
            ("time6", "25:00", false),
            ("date7", "2019年10月1日", true),
            ("date7", "2019.10.01 ~ 2019.10.07", true),
            ("date7", "2019-02-29", false),
            ("amount8", "￥88.50元", true),
            ("amount8", "88.50", false),
            ("phone_number9", "+86-0766-66888866", true),
            ("phone_number9", "+86-0766-668888661", false),
            ("car_number10", "粤A8Z888挂", true),
            ("car_number10", "粤A8中888", false),
            ("name11", "迈克尔·乔丹", true),
            ("name11", "Tommy 张三丰老师", false),
            ("name11", "Alexandra Richardson", true),
            ("phrase12", "配送中", true),
            ("phrase12", "shipped", false),
            ("whatever", "short", true),
        ];
        for (key, value, ok) in cases {
            assert_eq!(
                subscribe_value_ok(key, value, None),
                *ok,
                "{key} = {value:?}"
            );
        }
    }

    #[test]
    fn enum_values_come_from_the_template() {
        let values = ["客厅".to_string(), "卧室".to_string()];
        assert!(subscribe_value_ok("enum_string2", "客厅", Some(&values)));
        assert!(!subscribe_value_ok("enum_string2", "厨房", Some(&values)));
        assert!(subscribe_value_ok("enum_string2", "厨房", None));
    }
}
