"Columns: gaps, category keys, identifiers, label proxies and the columns an uncalled `MetaBlock` chooses, on tables whose answer is written out."
import warnings
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.columns import *

def test_missing_values_of_every_kind():
    vals = [None, np.nan, pd.NA, pd.NaT, '', '   ', 'a', 0, 0.0, False, 'nan']
    test_eq(is_missing(vals).tolist(), [True]*6 + [False]*5)        # 'nan' as text is a value, not a gap

def test_category_keys_written_out():
    "Each cell's vocabulary key, by hand: integral numbers as ints, text stripped, booleans spelled one way, gaps as None."
    cells = ['a', ' a ', 1.0, 1, '1', 2.5, True, 'TRUE', ' false', np.True_, None, np.nan, '']
    want = ['a', 'a', '1', '1', '1', '2.5', 'True', 'True', 'False', 'True', None, None, None]
    test_eq(list(category_keys(np.array(cells, dtype=object))), want)

def test_distinct_codes_keep_types_apart():
    codes, uniq = distinct_codes(np.array([True, 1, 'a', True, None], dtype=object))
    assert codes[0] == codes[3] and codes[0] != codes[1] and codes[4] == -1 and len(uniq) == 3

def _table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.choice(['mel', 'nv'], n)
    return pd.DataFrame({'patient_id': [f'P{i}' for i in range(n)], 'age': rng.uniform(20, 80, n).round(),
                         'sex': rng.choice(['m', 'f'], n), 'diagnosis_copy': np.where(label == 'mel', 'melanoma', 'naevus'),
                         'site': rng.choice(['head', 'arm', 'leg', 'back'], n), 'file': [f'images/{i}.jpg' for i in range(n)],
                         'same': 'x', 'label': label})

def test_inferred_columns_leave_out_ids_paths_constants_and_label_copies():
    df = _table()
    cats, conts, left, said = infer_meta_columns(df, read={'file': 'the image block reads it', 'label': 'the label reads it'}, label='label')
    test_eq(sorted(cats), ['sex', 'site']); test_eq(conts, ['age'])
    test_eq(set(left), {'patient_id', 'diagnosis_copy', 'file', 'same', 'label'})
    assert left['patient_id'].startswith('an id') and 'gives the label away' in left['diagnosis_copy'] and left['same'].startswith('constant')

def test_a_strong_column_is_warned_about_not_dropped():
    df = _table(400)
    df['score'] = np.where(df.label == 'mel', 0.9, 0.1) + np.random.default_rng(1).normal(0, 0.05, len(df))   # a strong feature, not a copy
    with pytest.warns(UserWarning, match="'score'"): found = warn_leaks(df, ['age', 'score'], 'label')
    assert list(found) == ['score']
    cats, conts, _, _ = infer_meta_columns(df.drop(columns=['diagnosis_copy']), read={'file': '', 'label': ''}, label='label')
    assert 'score' in conts

def test_a_level_that_fixes_the_label_is_found():
    "HAM10000's `dx_type = follow_up`: one value on many rows whose label never varies (recorded after the diagnosis)."
    rng = np.random.default_rng(0)
    label = rng.choice(['nv', 'mel', 'bkl'], 600)
    how = np.where(rng.random(600) < 0.6, 'histo', 'consensus')
    how[label == 'nv'] = np.where(rng.random((label == 'nv').sum()) < 0.7, 'follow_up', 'histo')
    res = label_proxies(pd.DataFrame(dict(how=how, label=label)), ['how'], 'label')
    assert res['how'][0] == 'determines' and 'follow_up' in res['how'][1]

def test_the_choice_is_said():
    text = choice_text(['sex'], ['age'], {'patient_id': 'an id'}, 1234)
    assert '1,234 training rows' in text and 'patient_id' in text and 'an id' in text

def _archetypes(n=500, seed=0):
    "One column of each kind a real table holds, with the decision a careful user makes: 'cat', 'cont' or why it is left out."
    rng = np.random.default_rng(seed)
    cols = {'area': (rng.integers(700, 6000, n), 'cont'),                        # whole square feet, ~80 % distinct
            'weight_kg': (rng.normal(70, 12, n).round(1), 'cont'),               # decimals, many distinct
            'income': (rng.lognormal(11, 0.5, n).round(2), 'cont'),              # all distinct decimals
            'dose_mg': (rng.choice(np.arange(50, 2000, 5), n), 'cont'),          # whole numbers with gaps in their range
            'age': (rng.integers(20, 90, n), 'cont'), 'lesions': (rng.poisson(40, n), 'cont'),   # an age, a count
            'zipcode': (rng.choice(rng.integers(10000, 99999, 49), n), 'cat'),   # integer codes
            'icd10_code': (rng.choice([101, 202, 303, 404, 505, 606, 707, 808, 909, 111, 222, 333, 444, 555, 666, 777, 888, 999, 121, 232, 343, 454], n), 'cat'),
            'scanner_id': (rng.integers(0, 6, n), 'cat'),                        # a device, named with id, few values
            'site_area_cm2': (rng.gamma(3, 2, n).round(2), 'cont'),              # a place's word in a measurement's name
            'seq': (np.arange(n) + 1, 'an id'),                                  # numbered in row order
            'record': (rng.permutation(n), 'an id'),                             # unique, filling its range
            'sample': ([f'{x:012x}' for x in rng.integers(0, 2**48, n)], 'an id'),   # hash-like
            'uuid': ([f'{a:08x}-{b:04x}-4{c:03x}-a{c:03x}-{d:012x}' for a,b,c,d in rng.integers(0, 2**31, (n, 4))], 'an id'),
            'image': ([f'ISIC_{x:07d}' for x in rng.permutation(n)], 'an id'),    # a prefix and digits
            'patient': ([f'P{x:05d}' for x in rng.integers(0, 120, n)], 'an id'), # a prefix and digits, several rows each
            'case_no': (rng.integers(0, 200, n), 'an id'),                       # its name says so
            'split': (rng.choice(['train', 'valid', 'test'], n), 'a split'),
            'fold': (rng.integers(0, 5, n), 'a split'),
            'subset': (rng.choice(['train', 'val'], n), 'a split'),
            'cohort': (rng.choice(['Train', 'Test'], n), 'a split')}              # the values say so
    return pd.DataFrame({c: v for c,(v,_) in cols.items()}), {c: d for c,(_,d) in cols.items()}

@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('n', [150, 500, 3000])
def test_every_column_archetype_gets_the_careful_decision(n, seed):
    "Measurements stay whatever their number of values; codes are categories (said); ids and splits are left out on evidence."
    df, want = _archetypes(n, seed)
    cats, conts, left, said = infer_meta_columns(df)
    got = {**{c: 'cat' for c in cats}, **{c: 'cont' for c in conts}, **{c: why for c,why in left.items()}}
    for c,d in want.items(): assert got[c].startswith(d), (c, got[c])
    assert {'zipcode', 'icd10_code'} <= set(said)

def test_a_measurement_is_kept_when_named_and_an_id_still_warned():
    df, _ = _archetypes(400)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        found = warn_leaks(df, ['area', 'income', 'record', 'image'])
    assert set(found) == {'record', 'image'} and len(w) == 2

@pytest.mark.parametrize('seed', range(3))
def test_integer_codes_whose_order_says_nothing_are_categories(seed):
    "60 integer codes with no name to tell, each with its own rate of 'yes': a lookup of the values beats their order, so they are categories (said); a measurement ordered with the label stays continuous, and so do codes that predict nothing."
    rng = np.random.default_rng(seed)
    codes, rate = rng.integers(0, 60, 1200), rng.choice([0.1, 0.9], 60)
    t = pd.DataFrame({'lot': codes, 'batch': rng.integers(0, 60, 1200), 'area': rng.integers(700, 6000, 1200)})
    t['label'] = np.where((rng.random(1200) < rate[codes]) | (t.area > 5000), 'yes', 'no')
    cats, conts, _, said = infer_meta_columns(t, read={'label': ''}, label='label')
    test_eq((cats, sorted(conts)), (['lot'], ['area', 'batch'])); assert 'better than their order' in said['lot']
