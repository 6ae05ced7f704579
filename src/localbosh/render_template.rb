#!/usr/bin/env ruby
# frozen_string_literal: true

# Renders one BOSH job's templates the way the Director does, with Ruby's
# stdlib only (the bosh-template gem is not installable offline).
#
# The classes below follow cloudfoundry/bosh closely, because templates that
# render here must render on a real Director and vice versa:
#   src/bosh-common/lib/bosh/common/template/{evaluation_context,evaluation_link,
#     evaluation_link_instance,property_helper}.rb
#   src/bosh-director/lib/bosh/director/core/templates/{source_erb,
#     job_template_renderer,job_template_loader}.rb
#   src/bosh-director/lib/bosh/director/deployment_plan/{job.rb bind_properties,
#     instance_spec.rb TemplateSpec}
#
# Input: one JSON document on stdin.
#   {"mode": "render" (default) | "check",
#    "job_dir": "/path/to/jobs/NAME",          spec, monit and templates/ are read from here
#    "job_spec": {...},                         optional: the parsed spec (else job_dir/spec)
#    "templates": {"<src>": "<dest>"},          optional: overrides the spec's templates
#    "properties": {...},                       the manifest's properties for this job (nested)
#    "spec": {deployment, name, index, id, az, bootstrap, address, ip, networks,
#             persistent_disk, dns_domain_name, job, release: {name, version}},
#    "links": {"<name>": {"properties": {...}, "address": "...",
#                         "instances": [{name, index, id, az, address, bootstrap, properties}]}}}
#
# Output:
#   render ok    -> exit 0, stdout {"<dest>": "<content>", ..., "monit": "<content>"}
#   render error -> exit 1, stderr the Director's message, stdout
#                   {"error": "<message>", "job": "...", "template_errors": [{template, line, message}]}
#   check        -> exit 0, stdout {"errors": ["<job>/<template>:<line>: <message>", ...]}
#   bad input    -> exit 2, stderr what is wrong with the request (not with the templates)

require 'erb'
require 'json'
require 'ostruct'
require 'shellwords'
require 'yaml'

# The Director loads ActiveSupport's Object#blank? into the template context
# (evaluation_context.rb, "for backward compatibility"), so real templates may
# call blank?/present?. A minimal equivalent keeps those templates rendering.
unless Object.method_defined?(:blank?)
  class Object
    def blank?
      respond_to?(:empty?) ? !!empty? : !self
    end

    def present?
      !blank?
    end

    def presence
      self if present?
    end
  end

  class String
    def blank?
      /\A[[:space:]]*\z/.match?(self)
    end
  end

  class Numeric
    def blank?
      false
    end
  end
end

module LocalBosh
  class InputError < StandardError; end

  class UnknownProperty < StandardError
    attr_reader :name

    def initialize(name)
      @name = name
      super("Can't find property '#{name}'")
    end
  end

  class UnknownLink < StandardError
    def initialize(name)
      super("Can't find link '#{name}'")
    end
  end

  class InvalidPropertyType < StandardError; end

  module PropertyHelper
    def lookup_property(collection, name)
      return nil if collection.nil?

      keys = name.split('.')
      ref = collection

      keys.each do |key|
        ref = ref[key]
        return nil if ref.nil?
      end

      ref
    end

    def sort_property(property)
      if property.is_a?(Hash)
        property.each do |k, v|
          property[k] = sort_property(v)
        end.sort.to_h
      else
        property
      end
    end

    def set_property(dst, name, value)
      keys = name.split('.')
      dst_ref = dst

      keys[0..-2].each do |key|
        dst_ref[key] ||= {}
        dst_ref = dst_ref[key]
      end

      dst_ref[keys[-1]] = value
    end

    def validate_properties_format(properties, name)
      keys = name.split('.')
      properties_ref = properties

      keys.each do |key|
        unless properties_ref.is_a?(Hash)
          raise InvalidPropertyType,
                "Property '#{name}' expects a hash, but received '#{properties_ref.class}'"
        end
        properties_ref = properties_ref[key]
        break if properties_ref.nil?
      end
    end
  end

  class ManualLinkDnsEncoder
    def initialize(manual_link_address)
      @manual_link_address = manual_link_address
    end

    def encode_query(*_)
      @manual_link_address
    end
  end

  # `p` and `if_p` of the template context, of a link and of a link's instance: one
  # lookup over each one's properties (the Director repeats it in three classes).
  module PropertyAccess
    include PropertyHelper

    def property_source
      @properties
    end

    def p(*args)
      names = Array(args[0])

      names.each do |name|
        result = lookup_property(property_source, name)
        return result unless result.nil?
      end

      return args[1] if args.length == 2

      raise UnknownProperty, names
    end

    def if_p(*names)
      values = names.map do |name|
        value = lookup_property(property_source, name)
        return EvaluationContext::ActiveElseBlock.new(self) if value.nil?

        value
      end

      yield(*values)
      EvaluationContext::InactiveElseBlock.new
    end
  end

  class EvaluationLinkInstance
    include PropertyAccess

    attr_reader :name, :index, :id, :az, :address, :properties, :bootstrap

    def initialize(name, index, id, az, address, properties, bootstrap)
      @name = name
      @index = index
      @id = id
      @az = az
      @address = address
      @properties = properties
      @bootstrap = bootstrap
    end
  end

  class EvaluationLink
    include PropertyAccess

    attr_reader :instances, :properties

    def initialize(instances, properties, dns_encoder)
      @instances = instances
      @properties = properties
      @dns_encoder = dns_encoder
    end


    # Only the Director can encode a link's DNS query; like the bosh-template
    # unit-test context we raise unless the link was given a manual address.
    def address(criteria = {})
      raise NotImplementedError, 'link.address requires bosh director' if @dns_encoder.nil?

      @dns_encoder.encode_query(criteria, false)
    end
  end

  class EvaluationContext
    include PropertyAccess

    attr_reader :name, :index, :properties, :raw_properties, :spec

    def initialize(spec)
      @name = spec['name']
      @index = spec['index']
      @spec = openstruct(spec, BackCompatOpenStruct)
      @raw_properties = spec['properties'] || {}
      @properties = openstruct(@raw_properties)
      @links = spec['links'] || {}
    end

    # The Director re-copies the context between templates only when a
    # template changed one of these (job_template_renderer.rb).
    def ==(other)
      public_members = %w[spec raw_properties name index properties]
      public_members.all? do |member|
        other.respond_to?(member) && send(member) == other.send(member)
      end
    end

    def get_binding # rubocop:disable Naming/AccessorMethodName
      binding
    end

    # p and if_p (PropertyAccess) read the bound properties as plain hashes.
    def property_source
      @raw_properties
    end

    def link(name)
      link_spec = lookup_property(@links, name)
      raise UnknownLink, name if link_spec.nil?

      return create_evaluation_link(link_spec) if link_spec.key?('instances')

      raise UnknownLink, name
    end

    def if_link(name)
      link_spec = lookup_property(@links, name)
      if link_spec.nil? || !link_spec.key?('instances')
        ActiveElseBlock.new(self)
      else
        yield create_evaluation_link(link_spec)
        InactiveElseBlock.new
      end
    end

    private

    def create_evaluation_link(link_spec)
      link_instances = link_spec['instances'].map do |instance_link_spec|
        EvaluationLinkInstance.new(
          instance_link_spec['name'],
          instance_link_spec['index'],
          instance_link_spec['id'],
          instance_link_spec['az'],
          instance_link_spec['address'],
          instance_link_spec['properties'],
          instance_link_spec['bootstrap'],
        )
      end

      encoder = link_spec.key?('address') ? ManualLinkDnsEncoder.new(link_spec['address']) : nil
      EvaluationLink.new(link_instances, link_spec['properties'], encoder)
    end

    def openstruct(object, open_struct_klass = OpenStruct)
      case object
      when Hash
        mapped = object.each_with_object({}) do |(k, v), h|
          h[k] = openstruct(v, open_struct_klass)
        end
        open_struct_klass.new(mapped)
      when Array
        object.map { |item| openstruct(item, open_struct_klass) }
      else
        object
      end
    end

    class BackCompatOpenStruct < OpenStruct
      def methods(regular = true)
        if regular
          super(regular)
        else
          marshal_dump.keys.map(&:to_sym)
        end
      end
    end

    class ActiveElseBlock
      def initialize(template_context)
        @context = template_context
      end

      def else
        yield
      end

      def else_if_p(*names, &block)
        @context.if_p(*names, &block)
      end

      def else_if_link(name, &block)
        @context.if_link(name, &block)
      end
    end

    class InactiveElseBlock
      def else; end

      def else_if_p(*_names)
        InactiveElseBlock.new
      end

      def else_if_link(_name)
        InactiveElseBlock.new
      end
    end
  end

  # One template, compiled as the Director compiles it (source_erb.rb).
  class SourceErb
    attr_reader :src_filepath, :dest_filepath, :erb

    def initialize(src_filepath, dest_filepath, erb_contents, job_name)
      @src_filepath = src_filepath
      @dest_filepath = dest_filepath
      @erb = ERB.new(erb_contents, trim_mode: '-')
      @erb.filename = File.join(job_name, src_filepath)
    end

    # Returns [content, nil] or [nil, {template, line, message}].
    def render(context)
      [erb.result(context.get_binding), nil]
    rescue Exception => e # rubocop:disable Lint/RescueException -- the Director rescues everything too
      line_entry = (e.backtrace || []).find { |l| l.include?(erb.filename) }
      line = line_entry ? line_entry.split(':')[1] : '(unknown)'
      message = "Error filling in template '#{@src_filepath}' (line #{line}: #{e})"
      [nil, { 'template' => @src_filepath, 'line' => line.match?(/\A\d+\z/) ? line.to_i : nil, 'message' => message }]
    end

    # Compiles the generated Ruby without running it: catches ERB syntax
    # errors (unbalanced <% end %>, bad Ruby) before any deploy does.
    def syntax_error
      RubyVM::InstructionSequence.compile(erb.src, erb.filename, erb.filename, 0)
      nil
    rescue SyntaxError => e
      e.message
    end
  end

  class JobRenderer
    include PropertyHelper

    # Render-time failures (what the Director reports for a deploy) as opposed
    # to InputError (the caller built the request wrongly).
    class Failure < StandardError
      attr_reader :errors

      def initialize(message, errors)
        @errors = errors
        super(message)
      end
    end

    # The keys TemplateSpec#spec lets through to templates; anything else a
    # caller passes is a mistake in the caller, not something to render.
    SPEC_KEYS = %w[
      deployment job index bootstrap name id az networks properties_need_filtering
      dns_domain_name persistent_disk address ip resource_pool release
    ].freeze
    LINK_KEYS = %w[instances properties address].freeze

    attr_reader :job_name

    def initialize(input)
      raise InputError, 'input must be a JSON object' unless input.is_a?(Hash)

      @input = input
      @job_dir = input['job_dir']
      raise InputError, "'job_dir' is required" unless @job_dir.is_a?(String)
      raise InputError, "job directory '#{@job_dir}' does not exist" unless File.directory?(@job_dir)

      @job_spec = input['job_spec'] || load_job_spec
      raise InputError, "job spec of '#{@job_dir}' is not a hash" unless @job_spec.is_a?(Hash)

      @job_name = @job_spec['name'] || File.basename(@job_dir)
      @templates = input['templates'] || @job_spec['templates'] || {}
      raise InputError, "'templates' must map source to destination" unless @templates.is_a?(Hash)
    end

    # Every ERB that does not compile: monit, the spec's templates, and files
    # under templates/ the spec does not list (dead today, rendered the day
    # someone lists them).
    def check
      listed = source_erbs
      names = listed.reject { |e| e.is_a?(String) }.map(&:src_filepath)
      base = File.join(@job_dir, 'templates')
      unlisted = Dir.glob('**/*', File::FNM_DOTMATCH, base: base).sort.reject do |rel|
        names.include?(rel) || !File.file?(File.join(base, rel))
      end
      unlisted_erbs = unlisted.map { |rel| SourceErb.new(rel, nil, File.read(File.join(base, rel)), @job_name) }

      [monit_erb, *listed, *unlisted_erbs].filter_map do |source_erb|
        source_erb.is_a?(String) ? source_erb : source_erb.syntax_error
      end
    end

    # Returns {dest => content, 'monit' => content}; raises Failure.
    def render
      erbs = source_erbs
      missing = erbs.grep(String)
      raise Failure.new(combined_message(missing), missing.map { |m| error_entry(nil, nil, m) }) unless missing.empty?

      properties = bind_properties(@input['properties'] || {})
      spec = template_spec(properties, links_for_job)
      original_context = EvaluationContext.new(spec)

      template_context = Marshal.load(Marshal.dump(original_context))
      monit, monit_error = monit_erb.render(template_context)
      # The Director lets a monit error escape on its own, outside the
      # per-job list (job_template_renderer.rb renders monit before the loop).
      raise Failure.new(monit_error['message'], [monit_error]) if monit_error

      files = {}
      errors = []
      erbs.each do |source_erb|
        template_context = Marshal.load(Marshal.dump(original_context)) unless original_context == template_context
        content, error = source_erb.render(template_context)
        if error
          errors << error
        else
          files[source_erb.dest_filepath] = content
        end
      end
      raise Failure.new(combined_message(errors.map { |e| e['message'] }), errors) unless errors.empty?

      files['monit'] = monit
      files
    end

    private

    def load_job_spec
      path = File.join(@job_dir, 'spec')
      raise InputError, "no spec file at '#{path}'" unless File.file?(path)

      YAML.safe_load(File.read(path), aliases: true)
    rescue Psych::SyntaxError => e
      raise InputError, "cannot parse '#{path}': #{e.message}"
    end

    def monit_erb
      path = File.join(@job_dir, 'monit')
      unless File.file?(path)
        raise InputError, "job '#{@job_name}' has no monit file at '#{path}' (BOSH requires one, even if empty)"
      end

      SourceErb.new('monit', 'monit', File.read(path), @job_name)
    end

    # SourceErb per listed template, or a message (String) for a listed
    # template whose file is missing: the Director would fail to load it.
    def source_erbs
      @templates.map do |src, dest|
        path = File.join(@job_dir, 'templates', src)
        if File.file?(path)
          SourceErb.new(src, dest, File.read(path), @job_name)
        else
          "Template '#{src}' is listed in jobs/#{@job_name}/spec but templates/#{src} does not exist"
        end
      end
    end

    # deployment_plan/job.rb bind_properties: walk the spec's declared names;
    # the manifest value wins unless nil, else the default. Undeclared
    # manifest properties never reach the template.
    def bind_properties(manifest_properties)
      raise InputError, "'properties' must be a hash" unless manifest_properties.is_a?(Hash)

      declared = @job_spec['properties'] || {}
      raise InputError, "properties of jobs/#{@job_name}/spec must be a hash" unless declared.is_a?(Hash)

      bound = {}
      declared.each_pair do |name, definition|
        begin
          validate_properties_format(manifest_properties, name)
        rescue InvalidPropertyType => e
          raise Failure.new(e.message, [error_entry(nil, nil, e.message)])
        end
        provided = lookup_property(manifest_properties, name)
        default = definition.is_a?(Hash) ? definition['default'] : nil
        set_property(bound, name, sort_property(provided.nil? ? default : provided))
      end
      bound
    end

    # Like the bosh-template test helper (test/template.rb links_hash): only
    # consumed links reach the template, and a link the spec does not
    # consume is an error rather than silently ignored.
    def links_for_job
      given = @input['links'] || {}
      raise InputError, "'links' must be a hash of link name to link" unless given.is_a?(Hash)

      consumed = (@job_spec['consumes'] || []).map { |c| c['name'] }
      given.each_key do |name|
        next if consumed.include?(name)

        message = "Link '#{name}' is not declared as a consumed link in this job."
        raise Failure.new(message, [error_entry(nil, nil, message)])
      end

      given.each_with_object({}) do |(name, link), result|
        raise InputError, "link '#{name}' must be a hash" unless link.is_a?(Hash)

        unknown = link.keys - LINK_KEYS
        raise InputError, "link '#{name}' has unknown keys: #{unknown.join(', ')}" unless unknown.empty?
        raise InputError, "link '#{name}' needs a list of 'instances'" unless link['instances'].is_a?(Array)

        result[name] = link
      end
    end

    def template_spec(properties, links)
      given = @input['spec'] || {}
      raise InputError, "'spec' must be a hash" unless given.is_a?(Hash)

      unknown = given.keys - SPEC_KEYS
      raise InputError, "spec has keys templates never see: #{unknown.join(', ')}" unless unknown.empty?

      spec = given.dup
      spec['properties'] = properties
      spec['links'] = links
      spec
    end

    def error_entry(template, line, message)
      { 'template' => template, 'line' => line, 'message' => message }
    end

    # job_template_renderer.rb formats the list with FormatterHelper
    # (header, then the body indented by two spaces).
    def combined_message(messages)
      body = messages.map { |m| "- #{m.strip}" }.join("\n").strip
      indented = body.gsub(/([^\n]*)(\n|$)/) do
        last = (Regexp.last_match(1) == '' && Regexp.last_match(2) == '')
        last ? '' : "  #{Regexp.last_match(1)}#{Regexp.last_match(2)}"
      end
      "- Unable to render templates for job '#{@job_name}'. Errors are:\n#{indented}"
    end
  end

  def self.main
    # Templates may print (puts, backticks); on a Director that lands in its
    # log. Here it must not corrupt the JSON answer, so fd 1 becomes stderr
    # and only the answer goes to the original stdout.
    answer_io = $stdout.dup
    $stdout.reopen($stderr)
    raw = $stdin.read
    begin
      input = JSON.parse(raw)
    rescue JSON::ParserError => e
      raise InputError, "stdin is not JSON: #{e.message}"
    end

    renderer = JobRenderer.new(input)
    case input['mode'] || 'render'
    when 'check'
      answer_io.write(JSON.generate('errors' => renderer.check))
    when 'render'
      answer_io.write(JSON.generate(renderer.render))
    else
      raise InputError, "unknown mode '#{input['mode']}' (render or check)"
    end
    0
  rescue JobRenderer::Failure => e
    $stderr.puts(e.message)
    answer_io.write(JSON.generate('error' => e.message, 'job' => renderer&.job_name, 'template_errors' => e.errors))
    1
  rescue InputError => e
    $stderr.puts("render_template.rb: #{e.message}")
    2
  end
end

exit(LocalBosh.main) if $PROGRAM_NAME == __FILE__
