// Snapshot a model from the Hugging Face hub once into the permanent store (virnucpro-fetch-model),
// so cluster and cloud nodes never each download it. The store path is the model key:
// `<id with / as -->@<revision>`.
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
    // Configs, tokenizer files and one weight format (safetensors, else .bin), at the commit the
    // revision resolves to (recorded in model/virnucpro_model.json).
    def args = task.ext.args ?: ''
    """
    virnucpro-fetch-model --model ${model_id} --revision ${revision} --outdir model ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: \$(python3 -c 'import virnucpro; print(virnucpro.__version__)')
        huggingface_hub: \$(python3 -c 'import huggingface_hub; print(huggingface_hub.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p model
    touch model/config.json model/virnucpro_model.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        virnucpro: stub
    END_VERSIONS
    """
}
