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
    cats, conts, left = infer_meta_columns(df, read={'file': 'the image block reads it', 'label': 'the label reads it'}, label='label')
    test_eq(sorted(cats), ['sex', 'site']); test_eq(conts, ['age'])
    test_eq(set(left), {'patient_id', 'diagnosis_copy', 'file', 'same', 'label'})
    assert left['patient_id'].startswith('an id') and 'gives the label away' in left['diagnosis_copy'] and left['same'].startswith('constant')

def test_a_strong_column_is_warned_about_not_dropped():
    df = _table(400)
    df['score'] = np.where(df.label == 'mel', 0.9, 0.1) + np.random.default_rng(1).normal(0, 0.05, len(df))   # a strong feature, not a copy
    with pytest.warns(UserWarning, match="'score'"): found = warn_leaks(df, ['age', 'score'], 'label')
    assert list(found) == ['score']
    cats, conts, _ = infer_meta_columns(df.drop(columns=['diagnosis_copy']), read={'file': '', 'label': ''}, label='label')
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
