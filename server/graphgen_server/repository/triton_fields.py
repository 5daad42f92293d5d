"""Every field of Triton's ``ModelConfig`` (tritonclient 2.73's model_config.proto), as dotted paths.

graphgen's own model_config.proto declares only the fields it honours; a config.pbtxt field outside
it is either Triton's (then ignored, with a warning) or a mistake (then refused, as Triton refuses
it). This list tells the two apart; tests/server/unit/test_model_config.py holds it to tritonclient's proto.
A map field's entries appear as ``.key`` and ``.value``, as text format writes them.
"""

TRITON_FIELDS = frozenset(
    """
    backend batch_input batch_input.data_type batch_input.kind batch_input.source_input batch_input.target_name
    batch_output batch_output.kind batch_output.source_input batch_output.target_name cc_model_filenames
    cc_model_filenames.key cc_model_filenames.value default_model_filename dynamic_batching
    dynamic_batching.default_priority_level dynamic_batching.default_queue_policy
    dynamic_batching.default_queue_policy.allow_timeout_override
    dynamic_batching.default_queue_policy.default_timeout_microseconds
    dynamic_batching.default_queue_policy.max_queue_size dynamic_batching.default_queue_policy.timeout_action
    dynamic_batching.max_queue_delay_microseconds dynamic_batching.preferred_batch_size
    dynamic_batching.preserve_ordering dynamic_batching.priority_levels dynamic_batching.priority_queue_policy
    dynamic_batching.priority_queue_policy.key dynamic_batching.priority_queue_policy.value
    dynamic_batching.priority_queue_policy.value.allow_timeout_override
    dynamic_batching.priority_queue_policy.value.default_timeout_microseconds
    dynamic_batching.priority_queue_policy.value.max_queue_size
    dynamic_batching.priority_queue_policy.value.timeout_action ensemble_scheduling
    ensemble_scheduling.max_inflight_requests ensemble_scheduling.step ensemble_scheduling.step.input_map
    ensemble_scheduling.step.input_map.key ensemble_scheduling.step.input_map.value
    ensemble_scheduling.step.model_name ensemble_scheduling.step.model_namespace
    ensemble_scheduling.step.model_version ensemble_scheduling.step.output_map
    ensemble_scheduling.step.output_map.key ensemble_scheduling.step.output_map.value input input.allow_ragged_batch
    input.data_type input.dims input.format input.is_non_linear_format_io input.is_shape_tensor input.name
    input.optional input.reshape input.reshape.shape instance_group instance_group.count instance_group.gpus
    instance_group.host_policy instance_group.kind instance_group.name instance_group.passive instance_group.profile
    instance_group.rate_limiter instance_group.rate_limiter.priority instance_group.rate_limiter.resources
    instance_group.rate_limiter.resources.count instance_group.rate_limiter.resources.global
    instance_group.rate_limiter.resources.name instance_group.secondary_devices
    instance_group.secondary_devices.device_id instance_group.secondary_devices.kind max_batch_size metric_tags
    metric_tags.key metric_tags.value model_metrics model_metrics.metric_control
    model_metrics.metric_control.histogram_options model_metrics.metric_control.histogram_options.buckets
    model_metrics.metric_control.metric_identifier model_metrics.metric_control.metric_identifier.family
    model_operations model_operations.op_library_filename model_repository_agents model_repository_agents.agents
    model_repository_agents.agents.name model_repository_agents.agents.parameters
    model_repository_agents.agents.parameters.key model_repository_agents.agents.parameters.value
    model_transaction_policy model_transaction_policy.decoupled model_warmup model_warmup.batch_size
    model_warmup.count model_warmup.inputs model_warmup.inputs.key model_warmup.inputs.value
    model_warmup.inputs.value.data_type model_warmup.inputs.value.dims model_warmup.inputs.value.input_data_file
    model_warmup.inputs.value.random_data model_warmup.inputs.value.zero_data model_warmup.name name optimization
    optimization.cuda optimization.cuda.busy_wait_events optimization.cuda.graph_spec
    optimization.cuda.graph_spec.batch_size optimization.cuda.graph_spec.graph_lower_bound
    optimization.cuda.graph_spec.graph_lower_bound.batch_size optimization.cuda.graph_spec.graph_lower_bound.input
    optimization.cuda.graph_spec.graph_lower_bound.input.key
    optimization.cuda.graph_spec.graph_lower_bound.input.value
    optimization.cuda.graph_spec.graph_lower_bound.input.value.dim optimization.cuda.graph_spec.input
    optimization.cuda.graph_spec.input.key optimization.cuda.graph_spec.input.value
    optimization.cuda.graph_spec.input.value.dim optimization.cuda.graphs optimization.cuda.output_copy_stream
    optimization.eager_batching optimization.execution_accelerators
    optimization.execution_accelerators.cpu_execution_accelerator
    optimization.execution_accelerators.cpu_execution_accelerator.name
    optimization.execution_accelerators.cpu_execution_accelerator.parameters
    optimization.execution_accelerators.cpu_execution_accelerator.parameters.key
    optimization.execution_accelerators.cpu_execution_accelerator.parameters.value
    optimization.execution_accelerators.gpu_execution_accelerator
    optimization.execution_accelerators.gpu_execution_accelerator.name
    optimization.execution_accelerators.gpu_execution_accelerator.parameters
    optimization.execution_accelerators.gpu_execution_accelerator.parameters.key
    optimization.execution_accelerators.gpu_execution_accelerator.parameters.value
    optimization.gather_kernel_buffer_threshold optimization.graph optimization.graph.level
    optimization.input_pinned_memory optimization.input_pinned_memory.enable optimization.output_pinned_memory
    optimization.output_pinned_memory.enable optimization.priority output output.data_type output.dims
    output.is_non_linear_format_io output.is_shape_tensor output.label_filename output.name output.reshape
    output.reshape.shape parameters parameters.key parameters.value parameters.value.string_value platform
    response_cache response_cache.enable runtime sequence_batching sequence_batching.control_input
    sequence_batching.control_input.control sequence_batching.control_input.control.bool_false_true
    sequence_batching.control_input.control.data_type sequence_batching.control_input.control.fp32_false_true
    sequence_batching.control_input.control.int32_false_true sequence_batching.control_input.control.kind
    sequence_batching.control_input.name sequence_batching.direct
    sequence_batching.direct.max_queue_delay_microseconds sequence_batching.direct.minimum_slot_utilization
    sequence_batching.iterative_sequence sequence_batching.max_sequence_idle_microseconds sequence_batching.oldest
    sequence_batching.oldest.max_candidate_sequences sequence_batching.oldest.max_queue_delay_microseconds
    sequence_batching.oldest.preferred_batch_size sequence_batching.oldest.preserve_ordering sequence_batching.state
    sequence_batching.state.data_type sequence_batching.state.dims sequence_batching.state.initial_state
    sequence_batching.state.initial_state.data_file sequence_batching.state.initial_state.data_type
    sequence_batching.state.initial_state.dims sequence_batching.state.initial_state.name
    sequence_batching.state.initial_state.zero_data sequence_batching.state.input_name
    sequence_batching.state.output_name sequence_batching.state.use_growable_memory
    sequence_batching.state.use_same_buffer_for_input_output version_policy version_policy.all version_policy.latest
    version_policy.latest.num_versions version_policy.specific version_policy.specific.versions
    """.split()  # noqa: SIM905 (197 paths read better as words than as quoted strings)
)
