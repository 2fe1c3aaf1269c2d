"""DFQ (Choi et al., CVPR-W 2020), in Fast-Datafree's ``datafree/synthesis`` shape.

Generator loss = w_bn * BN-statistics matching (all teacher BatchNorm2d layers)
               + w_oh * CE(teacher logits, teacher argmax)
               + w_balance * negative entropy of the batch-mean teacher softmax
               + w_adv * (-KL(teacher || student) at temperature T; student in eval mode, not updated)
"""

from __future__ import annotations

from torch import nn

from core.dfkd.base import SYNTHESIZERS, GeneratorStep, Guide, Synthesizer


@SYNTHESIZERS.register("dfq")
class DFQSynthesizer(Synthesizer):
    def generator_step(self, student: nn.Module, guide: Guide | None = None) -> GeneratorStep:
        self.generator.train()
        x = self.generator(self.sample_z())
        plan = guide.plan(x.detach()) if guide is not None else None
        total, parts, t_out = self._dfq_terms(x, student, plan)
        return self._finish(total, parts, x, guide, t_out, list(self.generator.parameters()), [self.opt_g])
