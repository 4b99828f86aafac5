"""`robot-runtime-train`: one stage of the RECAP cycle (pretrain or a round) from the command line.

A round runs whole (`--stage round`) or as its four steps one command each (`--stage value`, then
`advantages`, `policy`, `export`: cycle/stages.py), as the nightly daemon runs it.

`--stage progress` trains the progress reward model on the store's labeled episodes and labels the ones
nobody judged (cycle/progress_labels.py).

The same entry point runs under `torchrun` for data-parallel training on more processes, GPUs or nodes.
"""
from __future__ import annotations

import argparse
import json
import logging

from robot_runtime.episode import EpisodeError
from robot_runtime.improvement_loop.cycle.advantage import ESTIMATORS, THRESHOLDS, VALUE_INITS, LabelConfig
from robot_runtime.improvement_loop.cycle.baselines import train_baseline
from robot_runtime.improvement_loop.cycle.methods import ROUND_METHODS
from robot_runtime.improvement_loop.cycle.progress_labels import label_store
from robot_runtime.improvement_loop.cycle.rounds import (
    CycleConfig,
    improve,
    pretrain,
    result_path,
    round_data,
)
from robot_runtime.improvement_loop.cycle.stages import STEPS, run_step
from robot_runtime.improvement_loop.data.sources import MixtureConfig
from robot_runtime.improvement_loop.models.layers import CRITICS, NetConfig
from robot_runtime.improvement_loop.training.distributed import shutdown, world
from robot_runtime.improvement_loop.training.posterior import PosteriorConfig
from robot_runtime.improvement_loop.training.train import PolicyTrainConfig, TrainConfig


def main(argv: list[str] | None = None) -> None:
    """`robot-runtime-train --store DIR --work DIR --stage pretrain|round|value|advantages|policy|export|progress
    [--round N]`.

    Under `torchrun --nproc_per_node=K` the same command trains data-parallel (see training/distributed.py).
    """
    parser = argparse.ArgumentParser(description="Train and export a RECAP policy bundle from an episode store.")
    parser.add_argument("--store", required=True, help="episode store root (robot_runtime.episode.EpisodeStore)")
    parser.add_argument("--work", required=True, help="work directory: checkpoints, TensorBoard logs, bundles/")
    parser.add_argument("--stage", choices=("pretrain", "round", *STEPS, "progress"), required=True,
                        help="pretrain; a whole round; or one step of a round (value, advantages, policy, export, "
                             "in that order; a step already done returns its result); progress: train the progress "
                             "reward model on the labeled episodes and label the unlabeled ones it is sure of")
    parser.add_argument("--round", type=int, default=1, help="round index for a round or its steps (>= 1)")
    parser.add_argument("--pretrained", default=None,
                        help="the pretrain stage's result.json a round starts from (default WORK/pretrain/)")
    parser.add_argument("--model-id", default=CycleConfig.model_id)
    parser.add_argument("--beta", type=float, default=CycleConfig.beta, help="CFG weight of the round's bundle")
    parser.add_argument("--policy-steps", type=int, default=PolicyTrainConfig.steps)
    parser.add_argument("--value-steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--critic", choices=CRITICS, default=NetConfig.critic,
                        help="value network trained by the pretrain stage ('tql': TQL's transformer critic with "
                             "attention-entropy control); rounds keep the pretrained one's")
    labels = parser.add_argument_group("round labels (advantage.LabelConfig; the defaults are today's recipe)")
    labels.add_argument("--advantage", choices=ESTIMATORS, default=LabelConfig.estimator,
                        help="n_step: r_t..t+N-1 + V(o_t+N) - V(o_t); mc: R_t - V(o_t); gae: GAE(--gae-lambda)")
    labels.add_argument("--n-step", type=_n_step, default=LabelConfig.n_step,
                        help="N of the n_step advantage (default one second of control); 'auto': per task, the N "
                             "scoring best on the outcome and takeover AUCs (see advantage.LabelConfig)")
    labels.add_argument("--gae-lambda", type=float, default=LabelConfig.gae_lambda)
    labels.add_argument("--threshold", choices=THRESHOLDS, default=LabelConfig.threshold,
                        help="fraction: --positive-fraction of decided steps positive per task; youden: per task "
                             "the threshold maximizing Youden's J on successful vs failed episodes' steps; outcome: "
                             "the steps of successful episodes (and operator steps) positive, no threshold")
    labels.add_argument("--positive-fraction", type=float, default=LabelConfig.positive_fraction)
    labels.add_argument("--value-folds", type=int, default=LabelConfig.folds, help="cross-fitting folds by episode")
    labels.add_argument("--value-ensemble", type=int, default=LabelConfig.ensemble,
                        help="value members (own seeds and folds) whose mean values the advantages")
    labels.add_argument("--value-init", choices=VALUE_INITS, default=LabelConfig.value_init,
                        help="previous: warm-start each value model from the previous round's (folds by episode "
                             "hash; set it from round 1 on); the policy always restarts from pretrain")
    labels.add_argument("--value-store", action="append", default=[], metavar="DIR",
                        help="another episode store (e.g. another task's) the round's value also trains on; "
                             "repeatable")
    parser.add_argument("--method", choices=ROUND_METHODS, default=CycleConfig.method,
                        help="what a round trains: filtered_bc (the default, the benchmark's winner: successful "
                             "episodes' and operator steps), recap (advantage-conditioned), awr or bc on the same "
                             "rows")
    parser.add_argument("--source-weight", action="append", default=[], type=_weight, metavar="SOURCE=W",
                        help="sampling weight of an episode source (demonstration, autonomous, corrected, imported) "
                             "for policy training; 1 when not named, 0 leaves it out; repeatable")
    parser.add_argument("--task-weight", action="append", default=[], type=_weight, metavar="INSTRUCTION=W",
                        help="sampling weight of a task's episodes (by its instruction) for policy training; "
                             "repeatable")
    parser.add_argument("--postbc-members", type=int, default=0, metavar="K",
                        help="pretrain a PostBC policy: K bootstrap regressors' disagreement widens the BC targets "
                             "(0, the default: plain BC)")
    parser.add_argument("--postbc-alpha", type=float, default=PosteriorConfig.alpha,
                        help="PostBC's posterior noise weight")
    parser.add_argument("--positive-share", type=float, default=None,
                        help="RECAP's batches draw this share from positive rows (default: rows uniformly)")
    parser.add_argument("--indicators-from-null", action="store_true",
                        help="start the round's positive/negative indicator embeddings at the pretrained null one")
    parser.add_argument("--min-confidence", type=float, default=0.9,
                        help="--stage progress: label an episode only when its predicted outcome is this likely")
    parser.add_argument("--chunk-critic", action="store_true",
                        help="with --method recap: also train a chunk critic Q(o, chunk) and ship it as the "
                             "bundle's value.onnx (value-guided execution on the robot)")
    parser.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every,
                        help="steps between saved training states; rerunning a killed command resumes from them")
    parser.add_argument("--threads", type=int, default=TrainConfig.threads,
                        help="torch threads on this machine (shared by its torchrun ranks); 1 on a busy machine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = _config(args)
    except ValueError as err:
        parser.error(str(err))
    try:
        pretrained = args.pretrained or result_path(args.work, 0)
        if args.stage == "pretrain":
            result = pretrain(args.store, args.work, cfg).to_json()
        elif args.stage == "progress":
            try:
                result = label_store(args.store, args.work, args.min_confidence)
            except (ValueError, EpisodeError) as err:
                parser.error(str(err))
        elif args.stage == "round" and cfg.method == "recap":
            result = improve(args.store, args.work, pretrained, cfg, args.round).to_json()
        elif args.stage == "round":
            rd = round_data(args.store, args.work, pretrained, cfg, args.round)
            result = train_baseline(rd, args.work, cfg.method, cfg, as_round=True).to_json()
        else:
            result = run_step(args.stage, args.store, args.work, pretrained, cfg, args.round)
        if world().is_main:
            print(json.dumps(result, indent=1))
    finally:
        shutdown()


def _config(args: argparse.Namespace) -> CycleConfig:
    """The cycle's settings from the flags; ValueError names a bad one."""
    common = {"checkpoint_every": args.checkpoint_every, "threads": args.threads}
    labels = LabelConfig(folds=args.value_folds, ensemble=args.value_ensemble, value_init=args.value_init,
                         value_stores=tuple(args.value_store), estimator=args.advantage, n_step=args.n_step,
                         gae_lambda=args.gae_lambda, threshold=args.threshold, positive_fraction=args.positive_fraction)
    return CycleConfig(model_id=args.model_id, beta=args.beta, labels=labels, chunk_critic=args.chunk_critic,
                       positive_share=args.positive_share, indicators_from_null=args.indicators_from_null,
                       method=args.method, mixture=MixtureConfig(tuple(args.source_weight), tuple(args.task_weight)),
                       postbc=PosteriorConfig(members=args.postbc_members, alpha=args.postbc_alpha)
                       if args.postbc_members else None,
                       value=TrainConfig(steps=args.value_steps, net=NetConfig(critic=args.critic), **common),
                       policy=PolicyTrainConfig(steps=args.policy_steps, **common))


def _weight(text: str) -> tuple[str, float]:
    name, sep, weight = text.rpartition("=")
    try:
        if sep and name:
            return name, float(weight)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=WEIGHT, e.g. autonomous=0.5")


def _n_step(text: str) -> int | str:
    return text if text == "auto" else int(text)


if __name__ == "__main__":
    main()
