"""Checkpoints: round trip, tokenizer/vocab check, atomic overwrite, train state with weights_only."""

import os
import random

import pytest
import sentencepiece as spm
import torch

import model.checkpoint as ckpt_mod
from model import GPT, GPTConfig, load_checkpoint, load_train_state, save_checkpoint

CORPUS = """the fox ran to the river in the morning.
a small bird sang on the old fence.
the keeper lit the lamp for the ships at night.
grandmother baked bread and told stories of the mill.
the robot swept the platform when the last train left.
the ducks walked on the frozen pond and slipped.
a girl found a key in the sand by the sea.
the boat had a blue sail with a patch like a star.
the children listened to the wind in the pines.
every summer the family sailed to the island.
the miller's cat slept by the warm oven.
a boy with a drum marched between the stalls.
the moon rose over the quiet hills.
the owl counted the stars from the tall pine.
rain fell on the roof and the dog dreamed.
the baker sold pears and plums at dawn.
the old man planted a tree for his grandson.
a lantern swung in the dark barn.
the river carried a paper boat to the sea.
snow covered the road and the village was still.
""".strip().splitlines()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A throwaway 64-piece BPE SentencePiece model trained in-process."""
    prefix = tmp_path_factory.mktemp("tok") / "tok"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 2), model_prefix=str(prefix), vocab_size=64,
                                   model_type="bpe", character_coverage=1.0, num_threads=1,
                                   minloglevel=2)
    path = prefix.with_suffix(".model")
    assert spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() == 64
    return path


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})
    return GPT(cfg).eval(), cfg


IDX = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kw", [{}, {"tie_weights": False, "pos_encoding": "learned", "bias": True},
                                {"pos_encoding": "sinusoidal"}])
def test_round_trip(tmp_path, tokenizer, kw):
    m, cfg = tiny(**kw)
    out = save_checkpoint(tmp_path / "ckpt", m, cfg, tokenizer, train_config={"lr": 3e-4, "steps": 10})
    assert sorted(os.listdir(out)) == ["model.safetensors", "model_config.json", "tokenizer.model",
                                       "train_config.json"]
    loaded, loaded_cfg, train_cfg = load_checkpoint(out)
    assert loaded_cfg == cfg and train_cfg == {"lr": 3e-4, "steps": 10}
    assert not loaded.training
    assert torch.equal(loaded(IDX)[0], m(IDX)[0])
    if cfg.tie_weights:
        assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert load_train_state(out) is None


def test_vocab_mismatch_raises(tmp_path, tokenizer):
    m, cfg = tiny(vocab_size=80)
    save_checkpoint(tmp_path / "ckpt", m, cfg, tokenizer)
    with pytest.raises(ValueError, match=r"64 pieces.*vocab_size is 80"):
        load_checkpoint(tmp_path / "ckpt")


def test_incomplete_folder_raises(tmp_path, tokenizer):
    m, cfg = tiny()
    save_checkpoint(tmp_path / "ckpt", m, cfg, tokenizer)
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere")


def test_overwrite_is_atomic(tmp_path, tokenizer, monkeypatch):
    first, cfg = tiny(seed=0)
    second, _ = tiny(seed=1)
    target = tmp_path / "ckpt"
    save_checkpoint(target, first, cfg, tokenizer, train_config={"step": 1})

    # killed while writing: the previous checkpoint is untouched and the half-written one is gone
    def boom(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(ckpt_mod.torch, "save", boom)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(target, second, cfg, tokenizer, train_config={"step": 2}, train_state={"x": 1})
    loaded, _, train_cfg = load_checkpoint(target)
    assert train_cfg == {"step": 1} and torch.equal(loaded(IDX)[0], first(IDX)[0])
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]

    # killed between moving the old folder aside and moving the new one in: load finds the old one
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    with monkeypatch.context() as mp:
        mp.setattr(ckpt_mod.os, "replace", replace_then_die)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(target, second, cfg, tokenizer, train_config={"step": 2})
    assert not target.exists()
    loaded, _, train_cfg = load_checkpoint(target)
    assert train_cfg == {"step": 1}

    # a clean overwrite replaces it and leaves no siblings behind
    save_checkpoint(target, second, cfg, tokenizer, train_config={"step": 3})
    loaded, _, train_cfg = load_checkpoint(target)
    assert train_cfg == {"step": 3} and torch.equal(loaded(IDX)[0], second(IDX)[0])
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_train_state_loads_weights_only(tmp_path, tokenizer):
    m, cfg = tiny()
    opt = m.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    _, loss = m(IDX[:, :-1], IDX[:, 1:])
    loss.backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "scheduler": {"last_epoch": 1, "base_lrs": [1e-3, 1e-3]},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "data": {"step": 1, "offsets": [3, 17]},
    }
    save_checkpoint(tmp_path / "ckpt", m, cfg, tokenizer, train_state=state)
    got = load_train_state(tmp_path / "ckpt")
    assert got["data"] == state["data"] and got["scheduler"] == state["scheduler"]
    assert torch.equal(got["rng"]["torch"], state["rng"]["torch"])
    assert got["rng"]["python"] == state["rng"]["python"]
    fresh = m.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    fresh.load_state_dict(got["optimizer"])  # usable to resume
    exp_avg = next(iter(got["optimizer"]["state"].values()))["exp_avg"]
    assert torch.equal(exp_avg, next(iter(opt.state_dict()["state"].values()))["exp_avg"])
