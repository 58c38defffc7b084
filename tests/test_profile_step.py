"""The step profiler reads what it claims: ops by self time, oneDNN primitives by kind and implementation."""

from __future__ import annotations

import torch
from torch.profiler import record_function

from bench.profile_step import onednn_table, op_table, parse_onednn

LINES = [
    "onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,...",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16::blocked:abc::f0 "
    "wei:bf16::blocked:acb::f0 dst:bf16::blocked:abc::f0,attr-scratchpad:user,,32x512x64:32x64x512,2.5",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,undef,src:bf16::blocked:ab::f0 "
    "wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,attr-scratchpad:user,,64x128:128x96,0.5",
    "onednn_verbose,v1,primitive,exec,cpu,matmul,gemm:jit,undef,src:f32::blocked:ab::f0 wei:f32::blocked:ab::f0 "
    "dst:f32::blocked:ab::f0,,,8x8:8x8,1.0",
    "onednn_verbose,v1,ukernel,exec,cpu,brgemm,,undef,src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 "
    "dst:f32::blocked:ab::f0,,bs:1 beta:0,64x64:64x256,0.25",
    "onednn_verbose,v1,primitive,warning,ukernel,Scratchpad is not cache-line aligned,src/cpu/x64/ukernel/brgemm.cpp:207",
    "some other line, 1, 2",
]


def test_parse_onednn_groups_by_kind_implementation_and_source_dtype() -> None:
    groups = parse_onednn(LINES)
    amx = groups["matmul", "brg_matmul:avx10_1_512_amx", "bf16"]
    assert amx.calls == 2 and amx.ms == 3.0 and amx.shapes == {"32x512x64:32x64x512": 2.5, "64x128:128x96": 0.5}
    assert groups["matmul", "gemm:jit", "f32"].calls == 1
    assert groups["brgemm ukernel", "-", "bf16"].shapes == {"64x64:64x256": 0.25} and len(groups) == 3


def test_op_table_lists_the_ops_and_phases_of_a_step() -> None:
    a = torch.randn(256, 256)

    def step() -> None:
        with record_function("forward"):
            (a @ a).relu_()

    table = op_table(step, rows=5)
    assert table.startswith("step: ") and "forward 100%" in table and "| `aten::mm` |" in table


def test_onednn_table_names_the_kernel_of_a_bf16_matmul() -> None:
    a = torch.randn(64, 64, dtype=torch.bfloat16)
    table = onednn_table(lambda: a @ a)
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert "| matmul |" in table and "| bf16 |" in table and "64x64:64x64" in table
    else:
        assert table.startswith("no oneDNN primitive ran")
