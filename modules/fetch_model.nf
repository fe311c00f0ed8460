// Snapshot a model from the Hugging Face hub once into the permanent store, so cluster and cloud
// nodes never each download it. The store path is the model key: `<id with / as -->@<revision>`.
// Not run for a local model folder (main.nf passes the folder itself).
process FETCH_MODEL {
    tag "${model_id}@${revision}"
    label 'process_single'
    storeDir "${params.store_dir}/models/${key}"

    input:
    tuple val(key), val(model_id), val(revision)

    output:
    tuple val(key), path('model'), emit: model
    path 'versions.yml', emit: versions

    script:
    // The snapshot goes through the node's hub cache (reused if the model is already there) and
    // is copied out: configs, tokenizer files and one weight format (safetensors, else .bin).
    """
    shopt -s nullglob
    snapshot=\$(hf download ${model_id} --revision ${revision} --include '*.json' --include '*.txt' --include '*.safetensors' --quiet)
    weights=("\$snapshot"/*.safetensors)
    if [ \${#weights[@]} -eq 0 ]; then
        snapshot=\$(hf download ${model_id} --revision ${revision} --include 'pytorch_model*.bin' --quiet)
        weights=("\$snapshot"/pytorch_model*.bin)
    fi
    if [ \${#weights[@]} -eq 0 ]; then
        echo "FETCH_MODEL: ${model_id}@${revision} has neither .safetensors nor pytorch_model*.bin weights" >&2
        exit 1
    fi
    mkdir model
    cp -L "\$snapshot"/*.json "\$snapshot"/*.txt "\${weights[@]}" model/

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        huggingface_hub: \$(python3 -c 'import huggingface_hub; print(huggingface_hub.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p model
    touch model/config.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        huggingface_hub: stub
    END_VERSIONS
    """
}
