#!/usr/bin/env ruby
# frozen_string_literal: true

# Renders one BOSH job's templates the way the Director does, with the Ruby on
# this machine (the Director's gems are not installable offline): its standard
# library, and ActiveSupport where a template asks for it, as on a Director.
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
#    "links": {"<name>": {instances: [{name, index, id, az, address, bootstrap,
#                                      addresses, dns_addresses}],
#                         properties, instance_group, default_network, deployment_name,
#                         domain, use_short_dns_addresses, use_link_dns_names, group_name,
#                         address (manual links only)}},
#    "dns": {"azs": {"<az>": <number>}}}        optional: the Director's AZ numbers, for
#                                               link(...).address(azs: [...])
#
# Output:
#   render ok    -> exit 0, stdout {"<dest>": "<content>", ..., "monit": "<content>"};
#                   stderr the Director's planning warnings, if any
#   render error -> exit 1, stderr the Director's message, stdout
#                   {"error": "<message>", "job": "...", "template_errors": [{template, line, message}]}
#   check        -> exit 0, stdout {"errors": ["<job>/<template>:<line>: <message>", ...]}
#   bad input    -> exit 2, stderr what is wrong with the request (not with the templates)

# The standard library the Director has loaded when it renders (src/bosh-director/lib/
# bosh/director.rb requires these), so templates may use Time.parse, Digest::SHA1,
# SecureRandom, Pathname, OpenSSL, Set... without requiring them.
%w[digest/sha1 fileutils forwardable logger monitor optparse pathname tmpdir time zlib
   securerandom openssl set].each { |lib| require lib }

# The Director's spec is an OpenStruct (evaluation_context.rb requires 'ostruct'). From
# Ruby 3.5 on, ostruct is a bundled gem, out of reach of `ruby --disable-gems` (how the
# renderer is started, for speed) until RubyGems is loaded.
begin
  require 'ostruct'
rescue LoadError
  begin
    require 'rubygems'
    require 'ostruct'
  rescue LoadError => e
    warn "render_template.rb: the Director's template context is an OpenStruct, and this Ruby " \
         "(#{RUBY_VERSION}) cannot load ostruct: #{e.message} (gem install ostruct)"
    exit 2
  end
end

# (After ostruct: Ruby 3.1's json loads it as well.)
require 'erb'
require 'json'
require 'shellwords'
require 'yaml'

# The Director loads ActiveSupport's Object#blank? into the template context
# (evaluation_context.rb requires 'active_support/core_ext/object/blank', "for backward
# compatibility"). It is a gem and takes longer to load than a whole render, so it is
# loaded the first time a template uses it; from then on blank?, present?, presence and
# the ActiveSupport constant are ActiveSupport's own.
module LocalBosh
  def self.load_active_support
    require 'rubygems' unless defined?(::Gem)
    require 'active_support'
    require 'active_support/core_ext/object/blank'
  rescue LoadError => e
    raise LoadError, "the Director's template context includes ActiveSupport's blank?, and this Ruby " \
                     "cannot load it (#{e.message}; Debian: apt-get install ruby-activesupport)"
  end
end

class Object
  %i[blank? present? presence].each do |name|
    define_method(name) do
      LocalBosh.load_active_support
      public_send(name)
    end
  end

  def self.const_missing(name)
    return super unless name == :ActiveSupport

    LocalBosh.load_active_support
    ::ActiveSupport
  end

  # bosh/director/core_ext/object.rb (loaded by the Director, so templates see it)
  def to_openstruct
    self
  end
end

# bosh/director/core_ext/array.rb
class Array
  def to_openstruct
    map(&:to_openstruct)
  end
end

# bosh/director/core_ext/hash.rb
class Hash
  def to_openstruct
    OpenStruct.new(transform_values(&:to_openstruct))
  end

  def recursive_merge(other)
    merge(other) do |_, old_value, new_value|
      if old_value.instance_of?(Hash) && new_value.instance_of?(Hash)
        old_value.recursive_merge(new_value)
      else
        new_value
      end
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

  # dns/canonicalizer.rb raises this (a Director error) for a name that encodes badly.
  class DnsInvalidCanonicalName < StandardError; end

  module PropertyHelper
    # The Director's helper has it; templates see it through the context.
    def copy_property(dst, src, name, default = nil)
      keys = name.split('.')
      src_ref = src
      dst_ref = dst

      keys.each do |key|
        unless src_ref.is_a?(Hash)
          raise InvalidPropertyType, "Property '#{name}' expects a hash, but received '#{src_ref.class}'"
        end

        src_ref = src_ref[key]
        break if src_ref.nil?
      end

      keys[0..-2].each do |key|
        dst_ref[key] ||= {}
        dst_ref = dst_ref[key]
      end

      dst_ref[keys[-1]] ||= {}
      dst_ref[keys[-1]] = src_ref.nil? ? default : src_ref
    end

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

  # dns/dns_encoder.rb `encode_query` and dns/canonicalizer.rb: what link(...).address
  # returns on a Director, `q-<query>.<group>.<network>.<deployment>.<domain>`. The
  # Director numbers AZs (and, for short names, groups, networks and instances) in its
  # database; AZ numbers come with the request, and short names cannot be made here.
  class DnsEncoder
    HEALTHINESS = { 'healthy' => 3, 'unhealthy' => 1, 'all' => 4, 'default' => 0 }.freeze

    def initialize(az_numbers)
      @az_numbers = az_numbers
    end

    def encode_query(criteria, force_short_dns = nil)
      # EvaluationLink always passes the link's use_short_dns_addresses (false unless
      # the deployment's features ask for short names), so it decides here.
      if force_short_dns
        raise NotImplementedError,
              'link.address with short DNS names (features use_short_dns_addresses or ' \
              "use_link_dns_names) is numbered from the Director's database; the local " \
              'renderer cannot encode it'
      end

      octets = []
      octets << (criteria[:uuid].nil? ? "q-#{query_slug(criteria)}" : criteria[:uuid])
      octets += [criteria.fetch(:group_name), criteria.fetch(:default_network), criteria.fetch(:deployment_name)]
                .map { |name| canonicalize(name) }
      octets << criteria[:root_domain]
      octets.join('.')
    end

    private

    def query_slug(criteria)
      queries = []
      queries << (criteria[:azs] || []).map { |az| "a#{id_for_az(az)}" }
      case criteria[:initial_health_check]
      when 'synchronous' then queries << 'y1'
      when 'asynchronous' then queries << 'y0'
      end
      queries << "s#{HEALTHINESS.fetch(criteria[:status], 0)}"
      queries.flatten.sort.join
    end

    def id_for_az(az_name)
      return nil if az_name.nil?

      number = @az_numbers[az_name]
      raise "Unknown AZ: '#{az_name}'" if number.nil?

      number.to_s
    end

    def canonicalize(string)
      string = string.downcase.gsub(/_/, '-').gsub(/[^a-z0-9-]/, '')
      if string.start_with?('-')
        raise DnsInvalidCanonicalName, "Invalid DNS canonical name '#{string}', cannot start with a hyphen"
      end
      if string.end_with?('-')
        raise DnsInvalidCanonicalName, "Invalid DNS canonical name '#{string}', cannot end with a hyphen"
      end

      string
    end
  end

  # `p` and `if_p` of the template context, of a link and of a link's instance: one
  # lookup over each one's properties (the Director repeats it in three classes). Built
  # over an instance variable, so templates see no method the Director does not have.
  def self.property_access(ivar)
    Module.new do
      include PropertyHelper

      define_method(:p) do |*args|
        source = instance_variable_get(ivar)
        names = Array(args[0])

        names.each do |name|
          result = lookup_property(source, name)
          return result unless result.nil?
        end

        return args[1] if args.length == 2

        raise UnknownProperty, names
      end

      define_method(:if_p) do |*names, &block|
        source = instance_variable_get(ivar)
        values = names.map do |name|
          value = lookup_property(source, name)
          return EvaluationContext::ActiveElseBlock.new(self) if value.nil?

          value
        end

        raise LocalJumpError, 'no block given (yield)' if block.nil?

        block.call(*values)
        EvaluationContext::InactiveElseBlock.new
      end
    end
  end

  # The Director passes no per-instance properties (deployment_plan/links/link.rb
  # Link#spec), so `properties` is always nil and `p` finds nothing; kept because the
  # Director's class has the reader.
  class EvaluationLinkInstance
    include LocalBosh.property_access(:@properties)

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
    include LocalBosh.property_access(:@properties)

    attr_reader :instances, :properties

    def initialize(instances, properties, group_name, group_type, default_network, deployment_name, root_domain,
                   dns_encoder, use_short_dns)
      @instances = instances
      @properties = properties
      @group_name = group_name
      @group_type = group_type
      @default_network = default_network
      @deployment_name = deployment_name
      @root_domain = root_domain
      @dns_encoder = dns_encoder
      @use_short_dns = use_short_dns
    end

    def address(criteria = {})
      raise NotImplementedError, 'link.address requires bosh director' if @dns_encoder.nil?

      full_criteria = criteria.merge(
        group_name: @group_name,
        group_type: @group_type,
        default_network: @default_network,
        deployment_name: @deployment_name,
        root_domain: @root_domain,
      )
      @dns_encoder.encode_query(full_criteria, @use_short_dns)
    end
  end

  class EvaluationContext
    include LocalBosh.property_access(:@raw_properties)

    attr_reader :name, :index, :properties, :raw_properties, :spec

    def initialize(spec, dns_encoder)
      @name = spec['name']
      @index = spec['index']
      @spec = openstruct(spec, BackCompatOpenStruct)
      @raw_properties = spec['properties'] || {}
      @properties = openstruct(@raw_properties)
      @dns_encoder = dns_encoder
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

      encoder = link_spec.key?('address') ? ManualLinkDnsEncoder.new(link_spec['address']) : @dns_encoder
      group_name = link_spec['instance_group']
      group_type = 'instance-group'
      if link_spec.fetch('use_link_dns_names', false)
        group_name = link_spec['group_name']
        group_type = 'link'
      end

      EvaluationLink.new(
        link_instances, link_spec['properties'], group_name, group_type, link_spec['default_network'],
        link_spec['deployment_name'], link_spec['domain'], encoder, link_spec.fetch('use_short_dns_addresses', false)
      )
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
    # TemplateSpec#spec's whitelisted_link_spec_keys, and the keys of an instance in
    # deployment_plan/links/link.rb Link#spec: nothing else reaches a template.
    LINK_KEYS = %w[
      address default_network deployment_name domain group_name instance_group instances
      properties use_link_dns_names use_short_dns_addresses
    ].freeze
    LINK_INSTANCE_KEYS = %w[name id index bootstrap az address addresses dns_addresses].freeze

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
      original_context = EvaluationContext.new(spec, dns_encoder)

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

    # The Director gives a job the links its spec consumes. A link the manifest names
    # but the spec does not consume only draws a warning at planning
    # (links/link_consumers_parser.rb) and never reaches the templates.
    def links_for_job
      given = @input['links'] || {}
      raise InputError, "'links' must be a hash of link name to link" unless given.is_a?(Hash)

      consumed = (@job_spec['consumes'] || []).map { |c| c['name'] }
      unknown = given.keys - consumed
      unless unknown.empty?
        warning = +'Manifest defines unknown consumers:'
        unknown.each do |name|
          warning << "\n  - Job '#{@job_name}' does not define link consumer '#{name}' in the release spec"
        end
        warn(warning)
      end

      given.slice(*consumed).each_with_object({}) do |(name, link), result|
        result[name] = validate_link(name, link)
      end
    end

    def validate_link(name, link)
      raise InputError, "link '#{name}' must be a hash" unless link.is_a?(Hash)

      unknown = link.keys - LINK_KEYS
      raise InputError, "link '#{name}' has keys templates never see: #{unknown.join(', ')}" unless unknown.empty?
      raise InputError, "link '#{name}' needs a list of 'instances'" unless link['instances'].is_a?(Array)

      link['instances'].each_with_index do |instance, i|
        raise InputError, "link '#{name}' instance #{i} must be a hash" unless instance.is_a?(Hash)

        if instance.key?('properties')
          raise InputError, "link '#{name}' instance #{i} has 'properties': the Director never sends " \
                            'per-instance properties (deployment_plan/links/link.rb Link#spec)'
        end
        extra = instance.keys - LINK_INSTANCE_KEYS
        raise InputError, "link '#{name}' instance #{i} has unknown keys: #{extra.join(', ')}" unless extra.empty?
      end
      link
    end

    def dns_encoder
      dns = @input['dns'] || {}
      raise InputError, "'dns' must be a hash" unless dns.is_a?(Hash)

      azs = dns['azs'] || {}
      unless azs.is_a?(Hash) && azs.values.all? { |n| n.is_a?(Integer) }
        raise InputError, "'dns.azs' must map AZ names to numbers"
      end

      DnsEncoder.new(azs)
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
