"fastai's trackers on a metadata learner: CSVLogger (under meta_compare too), TensorBoard, Weights & Biases offline with `log_preds`."
import os
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from conftest import meta_dls

@pytest.fixture
def learn(synth):
    path, df = synth('meta', n=96, size=16)
    return meta_cnn_learner(meta_dls(path, df, 'meta', bs=16), 'lcnet_050', pretrained=False, metrics=accuracy)

def test_csv_logger_follows_every_run_of_meta_compare(synth, tmp_path):
    path, df = synth('meta', n=48, size=16)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    meta_compare(df, path, folder='images', group_col='patient', cat_names=['site'], cont_names=['age'], arch='lcnet_050', pretrained=False,
                 size=16, bs=16, n_folds=2, epochs=2, cbs=CSVLogger(tmp_path/'log.csv', append=True))
    log = pd.read_csv(tmp_path/'log.csv')
    test_eq(int((log.epoch != 'epoch').sum()), 2 * 2 * 2)          # image only and concat, 2 folds, 2 epochs each (a header per run)

def test_tensorboard_logs_scalars_and_predictions_with_metadata(learn, tmp_path):
    pytest.importorskip('tensorboard')
    from fastai.callback.tensorboard import TensorBoardCallback
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    with learn.no_bar(), learn.no_logging(): learn.fit(1, cbs=TensorBoardCallback(tmp_path, trace_model=False, n_preds=4))
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()
    assert {'train_loss', 'valid_loss', 'accuracy'} <= set(tags['scalars']) and tags['images'] == ['Sample results']

def _wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip('wandb')
    for k,v in dict(WANDB_MODE='offline', WANDB_DIR=str(tmp_path), WANDB_SILENT='true').items(): monkeypatch.setenv(k, v)
    return wandb

def test_wandb_table_shows_each_image_with_its_metadata(learn, tmp_path, monkeypatch):
    "What `WandbCallback(log_preds=True)` logs: a table of the images, a column per metadata column, label and prediction; written by an offline run."
    wandb = _wandb(tmp_path, monkeypatch)
    b = learn.dls.valid.one_batch()
    with learn.no_bar(): preds, _, dec = learn.get_preds(dl=[b], with_decoded=True)
    x, y, its, outs = learn.dls.valid.show_results(b, dec, show=False, max_n=4)
    res = wandb_process(x, y, its, outs, preds)
    table = res['Prediction_Samples']
    test_eq(table.columns, ['image', 'site', 'age', 'noise', 'label', 'prediction'])
    test_eq(len(table.data), 4)
    assert isinstance(table.data[0][0], wandb.Image) and table.data[0][-1] in ('no', 'yes')
    run = wandb.init(project='fastai_meta-test', mode='offline', dir=tmp_path)
    run.log(res); run.finish()
    assert list(tmp_path.rglob('*.wandb')), 'no offline run file written'

def test_wandb_callback_runs_offline(learn, tmp_path, monkeypatch):
    "The whole callback, offline, with `log_preds`: `MetaWandbCallback` logs the config that fastai's own fails on (fastai#4173), every epoch's metrics and the predictions table."
    wandb = _wandb(tmp_path, monkeypatch)
    run = wandb.init(project='fastai_meta-test', mode='offline', dir=tmp_path)
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit(2, cbs=MetaWandbCallback(log_preds=True, log_model=False, n_preds=4))
        assert run.config['batch size'] == 16 and run.config['Learner']['_name'].startswith('<fastai_meta.learner.MetaLearner')
        assert {'Prediction_Samples', 'accuracy', 'valid_loss', 'epoch'} <= set(run.summary.keys()) and run.summary['epoch'] == 2
    finally: run.finish()
    assert not hasattr(learn, 'gather_args') or 'gather_args' not in learn.__dict__     # the learner is left as it was
    assert list(tmp_path.rglob('*.wandb')), 'no offline run file written'
