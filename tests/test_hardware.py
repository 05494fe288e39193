from alignkit.hardware import Hardware, choose_settings


def test_cpu_gets_fp32_no_checkpointing_no_workers():
    settings, reasons = choose_settings(Hardware("cpu", 2, cpu_bf16=False), explicit=set())
    assert settings["bf16"] is False and settings["fp16"] is False and settings["dtype"] == "float32"
    assert settings["use_cpu"] is True and settings["gradient_checkpointing"] is False
    assert settings["dataloader_num_workers"] == 0
    assert "fp32" in reasons["precision"]


def test_cpu_with_amx_gets_bf16_autocast_over_fp32_weights():
    settings, reasons = choose_settings(Hardware("cpu", 2, cpu_bf16=True), explicit=set())
    assert settings["bf16"] is True and settings["fp16"] is False
    assert settings["dtype"] == "float32"  # autocast only: LoRA weights and optimizer state stay fp32
    assert settings["use_cpu"] is True and settings["gradient_checkpointing"] is False
    assert reasons["precision"].startswith("bf16:") and "AMX" in reasons["precision"]


def test_cuda_precision_by_capability():
    bf16, _ = choose_settings(Hardware("cuda", 8, False, cuda_bf16=True, gpu_name="A100"), set())
    fp16, _ = choose_settings(Hardware("cuda", 8, False, cuda_bf16=False, gpu_name="T4"), set())
    assert (bf16["bf16"], bf16["fp16"], bf16["dtype"]) == (True, False, "bfloat16")
    assert (fp16["bf16"], fp16["fp16"], fp16["dtype"]) == (False, True, "float16")
    assert bf16["gradient_checkpointing"] is True


def test_explicit_keys_are_never_chosen():
    settings, reasons = choose_settings(Hardware("cpu", 2, False), explicit={"fp16", "gradient_checkpointing"})
    assert "bf16" not in settings and "fp16" not in settings and "gradient_checkpointing" not in settings
    assert reasons["precision"] == "set by the recipe"


def test_omp_wait_policy_is_recorded_with_advice(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _, reasons = choose_settings(Hardware("cpu", 2, cpu_bf16=False), explicit=set())
    assert "OMP_WAIT_POLICY=PASSIVE" in reasons["omp_wait_policy"]  # the advice for shared CPUs
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    _, reasons = choose_settings(Hardware("cpu", 2, cpu_bf16=False), explicit=set())
    assert reasons["omp_wait_policy"] == "PASSIVE (set by the user)"
