"The command line says what it does and fails loudly: columns used and left out, the recipe, one clear line and a non-zero exit for bad input."
import inspect, subprocess, sys
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.cli import main, predict_csv, train_csv, compare_csv, _parser
from fastai_meta.learner import run_demo
from conftest import meta_dls

@pytest.fixture(scope='module')
def exported(synth, tmp_path_factory):
    "A learner trained by `fastai-meta train` with inferred columns on a table with an id and a label copy; what it printed."
    path, df = synth('meta', n=64)
    tmp = tmp_path_factory.mktemp('cli')
    table = df.assign(patient_id=[f'P{i // 2}' for i in range(len(df))], outcome=df.label.map({'yes': 'bad', 'no': 'good'}))
    table.to_csv(tmp/'train.csv', index=False)
    args = ['train', str(tmp/'train.csv'), str(path/'images'), '--label', 'label', '--group-col', 'patient_id', '--exclude', 'noise',
            '--arch', 'resnet18', '--epochs', '1', '--size', '32', '--out', str(tmp/'m.pkl')]
    return path, table, tmp, args

def test_train_says_columns_split_and_recipe(exported, capsys):
    path, table, tmp, args = exported
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'categorical: site' in out and 'continuous:  age' in out                        # the choice, printed
    assert "patient_id  the splitter reads it" in out and 'noise       excluded' in out
    assert "outcome     gives the label away" in out                                        # the recoded label is left out
    assert "by 'patient_id', groups kept on one side, stratified by the label" in out and 'fit_one_cycle(1, 0.01, cbs=PreciseBN)' in out
    enc = load_learner(tmp/'m.pkl').dls.meta.encoding
    test_eq(enc.cat_names + enc.cont_names, ['site', 'age'])

def test_timm_body_is_fine_tuned_with_lr_mult_1(synth):
    "A pretrained timm body is fine-tuned with the learner's `lr_mult=1` (fastai's 100 would train it at lr/200); torchvision keeps 100."
    from fastai_meta.learner import fit_recipe as _recipe
    dls = meta_dls(*synth('xor', n=64), 'xor', bs=16)
    timm_learn = meta_cnn_learner(dls, 'resnet18', pretrained=False); timm_learn.pretrained = True     # as with --weights, without a file
    parts = lambda r: (r.func.__name__, r.args, r.keywords)                              # a partial of the learner's method
    test_eq(parts(_recipe(timm_learn, 5, None)), ('fine_tune', (5, 3e-3), dict(lr_mult=1)))
    tv = meta_cnn_learner(dls, resnet18, pretrained=False); tv.pretrained = True
    test_eq(parts(_recipe(tv, 5, None)), ('fine_tune', (5, 2e-3), dict(lr_mult=100)))
    method, args, kw = parts(_recipe(meta_cnn_learner(dls, 'resnet18', pretrained=False), 5, 1e-3))
    test_eq((method, args, list(kw)), ('fit_one_cycle', (5, 1e-3), ['cbs'])); assert isinstance(kw['cbs'], PreciseBN)   # from scratch: honest validation losses

def run_cli(*args):
    return subprocess.run([str(Path(sys.executable).parent/'fastai-meta'), *map(str, args)], capture_output=True, text=True)

def test_predict_fails_loudly_on_bad_input(exported, capsys):
    "A missing model, table, folder or metadata column: one line on stderr, exit code 2, no traceback, nothing written."
    path, table, tmp, args = exported
    if not (tmp/'m.pkl').exists(): assert main(args) == 0
    table.drop(columns=['label', 'age']).to_csv(tmp/'no_age.csv', index=False)
    capsys.readouterr()
    for model, csv, images, says in [(tmp/'m.pkl', tmp/'nope.csv', path/'images', 'table not found'),
                                     (tmp/'m.pkl', tmp/'train.csv', tmp/'nope', 'image folder not found'),
                                     (tmp/'m.pkl', tmp/'no_age.csv', path/'images', "lacks the column(s) ['age']")]:
        assert main(['predict', str(model), str(csv), str(images), '--out', str(tmp/'p.csv')]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, (says, err[-1500:])
        assert not (tmp/'p.csv').exists()
    assert main(['train', str(tmp/'train.csv'), str(path/'images'), '--label', 'dx']) == 2
    assert "label column 'dx' not in" in capsys.readouterr().err
    r = run_cli('predict', tmp/'nope.pkl', tmp/'train.csv', path/'images', '--out', tmp/'p.csv')    # the console command itself
    assert r.returncode == 2 and 'model file not found' in r.stderr and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr[-1500:]

def test_predict_keeps_its_columns_when_every_row_fails(exported, capsys):
    "Every image missing: every row out with an empty prediction and the reason; the same columns as a good run; exit code 1."
    path, table, tmp, args = exported
    if not (tmp/'m.pkl').exists(): assert main(args) == 0
    table.iloc[:6].assign(fname='gone.png').to_csv(tmp/'gone.csv', index=False)
    capsys.readouterr()
    assert main(['predict', str(tmp/'m.pkl'), str(tmp/'gone.csv'), str(path/'images'), '--out', str(tmp/'gone_p.csv')]) == 1
    said = capsys.readouterr()
    assert '0 of 6 rows predicted; 6 not' in said.out, said
    assert len(said.err.strip().splitlines()) == 6                                               # 5 rows named, then '... and 1 more'
    out = pd.read_csv(tmp/'gone_p.csv')
    test_eq(list(out.columns), ['row', 'prediction', 'p_no', 'p_yes', 'error'])
    assert out.prediction.isna().all() and out.error.str.contains('gone.png').all()

def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit): main(['train', '--help'])
    h = capsys.readouterr().out
    assert '(default: resnet34)' in h and '(default: 0.2)' in h and '--exclude' in h and '(default: 0)' in h

def test_help_is_each_parameters_comment(capsys):
    """Every option of `train`, `compare` and `demo` is helped by the comment on its parameter (one text for the API and
    the CLI; compare's shared options are train's), a backticked parameter written as its option."""
    own = lambda f: {k: v for k,v in docments(f).items() if v}
    helps = {}
    for cmd, f, docs in (('train', train_csv, own(train_csv)), ('compare', compare_csv, {**own(train_csv), **own(compare_csv)}),
                         ('demo', run_demo, own(run_demo))):
        with pytest.raises(SystemExit): main([cmd, '--help'])
        helps[cmd] = h = ' '.join(capsys.readouterr().out.split())
        params = [k for k in inspect.signature(f).parameters if k not in ('runner', 'size', 'path', 'verbose')]
        missing = [k for k in params if k not in docs or ' '.join(docs[k].split('`')[0].split())[:25] not in h]
        assert not missing, (cmd, missing)
    assert '(multilabel with --label-delim,' in helps['train'] and 'grouped by --group-col' in helps['compare']

def test_train_input_errors_are_one_line_with_exit_2(exported, capsys):
    "A number column holding text, an image file that is not there, a weights file that is not weights: one line naming it, exit 2, no traceback."
    path, table, tmp, args = exported
    base = ['--label', 'label', '--arch', 'resnet18', '--epochs', '1', '--size', '32', '--out', str(tmp/'bad.safetensors')]
    table.assign(age=table.age.astype(object).where(table.index != 3, 'forty')).to_csv(tmp/'text.csv', index=False)
    table.assign(fname=table.fname.where(table.index != 0, 'nowhere.png')).to_csv(tmp/'gone.csv', index=False)
    (tmp/'junk.pth').write_bytes(b'not weights')
    cases = [(['train', str(tmp/'text.csv'), str(path/'images'), '--cont', 'age', '--cat', 'site', *base], "'age'"),
             (['train', str(tmp/'gone.csv'), str(path/'images'), *base], 'nowhere.png'),
             (['train', str(tmp/'train.csv'), str(path/'images'), '--weights', str(tmp/'junk.pth'), *base], 'junk.pth')]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith('fastai-meta train: error:') and named in err, err

def test_predict_with_tta_and_progress(exported, synth, tmp_path, capsys):
    "`--tta` averages over the model's augmentations (a .pkl keeps them), mixed with the plain prediction as fastai mixes them, and says when there are none (a .safetensors export); a table of several chunks says its progress on stderr."
    path, table, tmp, args = exported
    dls = meta_dls(path, table, 'meta', bs=16, batch_tfms=aug_transforms(size=32, flip_vert=True))
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False, cbs=PreciseBN())    # from scratch: eval-mode batchnorm of the weights as they are
    with learn.no_bar(), learn.no_logging(): learn.fit(2)
    learn.export(tmp_path/'aug.pkl'); learn.export_safe(tmp_path/'aug.safetensors')
    plain = predict_csv(tmp_path/'aug.pkl', tmp/'train.csv', path/'images', chunk=16)
    assert 'predicted 64 of 64 rows' in capsys.readouterr().err
    aug = predict_csv(tmp_path/'aug.pkl', tmp/'train.csv', path/'images', tta=True)
    assert '--tta' not in capsys.readouterr().err
    p, q = aug[['p_no', 'p_yes']].to_numpy(float), plain[['p_no', 'p_yes']].to_numpy(float)
    test_close(p.sum(1), 1, eps=1e-4)
    mean_aug = (p - 0.25*q) / 0.75                            # fastai's mix: 3/4 the mean over augmentations, 1/4 the plain prediction
    assert mean_aug.min() > -1e-4 and mean_aug.max() < 1 + 1e-4 and np.abs(p - q).max() > 1e-3
    assert main(['predict', str(tmp_path/'aug.safetensors'), str(tmp/'train.csv'), str(path/'images'), '--tta', '--out', str(tmp_path/'p.csv')]) == 0
    assert 'changed no prediction' in capsys.readouterr().err

def test_every_option_reaches_its_command_by_name():
    "`main` calls `train_csv` and `compare_csv` by keyword with the parsed options: each of their parameters is an option of its command (none falls silently to a default), whose default is the function's."
    for cmd, f in (('train', train_csv), ('compare', compare_csv)):
        a = vars(_parser().parse_args([cmd, 'x.csv', 'images', '--label', 'y']))
        assert [k for k in inspect.signature(f).parameters if k not in a] == ['runner'], cmd     # the runner is made from --workers, --ray-address, --gpus-per-job
        assert {'workers', 'ray_address', 'gpus_per_job'} <= set(a)
        for k,v in inspect.signature(f).parameters.items():     # one default per option: the function's
            if k not in ('runner', 'fname_col') and v.default is not inspect.Parameter.empty: assert a[k] == v.default, (cmd, k)
